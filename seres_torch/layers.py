"""PyTorch layers of both families: the attention vocabulary (``SEBlock``, ``SEModule``,
``ECABlock``, ``create_attn``), ``ConvBNAct``, stochastic depth (``DropPath``) and the sizing
rules they share.

The notebook's definitions (``../shared/seed/se_residual_notebook.txt``) with PEP 8 names, and
timm's ``SEModule`` / ``EcaModule``. Attribute names and registration order are part of the
checkpoint format: they fix the ``state_dict`` keys (``fc.0.weight``, ``fc1.weight``,
``conv.weight``, ``bn.running_mean``, ...), so a checkpoint saved from the notebook's or timm's
classes loads here with ``strict=True``. Do not rename or reorder them.

A new channel attention is one class here (constructor ``(channels, ...)``), its Flax twin in
``seres_jax.layers`` and one entry in each ``ATTENTION_LAYERS``; every block of both families
can then use it by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS = ("silu", "relu")
"""The activations a model's ``act`` may name (``make_activation``)."""


def count_params(module: nn.Module) -> int:
    """Trainable parameters, counted as the notebook does (buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_widths(model: nn.Module) -> None:
    """Refuse a model with a convolution of no channels (a small ``channels`` under grouped
    convolutions or the SE squeeze), which PyTorch builds without a word; the Flax twin's
    ``conv2d`` refuses the same widths."""
    empty = [
        f"{name} ({m.in_channels} -> {m.out_channels} channels in {m.groups} group(s))"
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and min(m.in_channels, m.out_channels) < 1
    ]
    if empty:
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise ValueError(f"widths must be positive multiples of the groups: {shown}")


def make_activation(act: str) -> nn.Module:
    """The notebook's in-place activations, by name."""
    if act == "silu":
        return nn.SiLU(inplace=True)
    if act == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


class SEBlock(nn.Module):
    """Squeeze-and-excitation: global average pool, a two-layer 1×1-conv MLP, sigmoid gate.

    The hidden width is ``max(min_hidden, channels // reduction)``; the MLP is an
    ``nn.Sequential`` so its keys are ``fc.0.*`` and ``fc.2.*`` (the activations hold no weights).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=True),
            nn.SiLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.pool(x))


def make_divisible(value: float, divisor: int = 8) -> int:
    """timm's ``make_divisible(v, divisor, round_limit=0.)``: nearest multiple, at least one."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SEModule(nn.Module):
    """timm's ``SEModule``: mean → 1×1 conv (``fc1``) → ReLU → 1×1 conv (``fc2``) → sigmoid;
    the squeeze width is ``rd_channels`` if given (the SENet authors' ``channels // 16``), else
    ``make_divisible(channels * rd_ratio, rd_divisor)``."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_divisor: int = 8,
        rd_channels: int | None = None,
    ) -> None:
        super().__init__()
        hidden = make_divisible(channels * rd_ratio, rd_divisor)
        if rd_channels is not None:
            hidden = rd_channels
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(w)


class ConvBNAct(nn.Module):
    """``k×k`` convolution (no bias, stride ``s``, padding ``p``) → BatchNorm → activation."""

    def __init__(
        self, cin: int, cout: int, k: int = 3, s: int = 1, p: int = 1, act: str = "silu"
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    """ECA's odd kernel size for ``channels``: ``|log2(C) + beta| / gamma``, rounded down,
    bumped to odd, at least 3 (timm's ``EcaModule``)."""
    t = int(abs(math.log2(channels) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class ECABlock(nn.Module):
    """Efficient channel attention: global average pool, a bias-free 1-D convolution across
    channels, sigmoid gate (timm's ``EcaModule``; key ``conv.weight``, shape ``(1, 1, k)``)."""

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: int = 2, beta: int = 1
    ) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, beta)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        return x * torch.sigmoid(w).view(x.shape[0], -1, 1, 1)


ATTENTION_LAYERS: dict[str, type[nn.Module]] = {"se": SEModule, "eca": ECABlock}
"""timm's ``create_attn`` vocabulary: attention name -> class built as ``cls(channels)``."""
ATTENTIONS = (*ATTENTION_LAYERS, "none")
"""What a model's ``attn`` may name: the ``ATTENTION_LAYERS`` and ``"none"`` (no attention)."""


def create_attn(
    attn: str | None,
    channels: int,
    *,
    se_layer: Callable[..., nn.Module] = SEModule,
    **kwargs: object,
) -> nn.Module | None:
    """The channel attention named ``attn`` over ``channels`` (``None``/``"none"``: no module).

    ``se_layer`` is what ``"se"`` builds in the caller's family: timm's ``SEModule`` by
    default, ``partial(SEBlock, reduction=r)`` in the notebook's blocks. ``kwargs`` go to the
    class's constructor.
    """
    if attn in (None, "none"):
        return None
    if attn not in ATTENTION_LAYERS:
        raise ValueError(f"unknown attention {attn!r}; expected one of {ATTENTIONS} or None")
    layer = se_layer if attn == "se" else ATTENTION_LAYERS[attn]
    return layer(channels, **kwargs)


def drop_path(
    x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True
) -> torch.Tensor:
    """timm's ``drop_path`` (stochastic depth): in training, each sample's ``x`` (a residual
    branch) is zeroed with probability ``drop_prob``, one Bernoulli draw per sample (a mask of
    shape ``(B, 1, ..., 1)`` in ``x``'s dtype), and the kept ones are scaled by
    ``1 / (1 - drop_prob)`` (``scale_by_keep``), so the expected value is ``x``. The identity
    in eval mode and at rate 0."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    """timm's ``DropPath``: ``drop_path`` in the module's training mode. No parameters, no
    buffers: a model with it has the ``state_dict`` of one without."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"
