"""PyTorch layers of the reference design: channel attention (SE, ECA) and conv → BN → act.

These are the notebook's definitions (``../shared/seed/se_residual_notebook.txt``) with PEP 8 names.
Attribute names and registration order are part of the checkpoint format: they fix the
``state_dict`` keys (``fc.0.weight``, ``conv.weight``, ``bn.running_mean``, ...), so a checkpoint
saved from the notebook's classes loads here with ``strict=True``. Do not rename or reorder them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = ("silu", "relu")
ATTENTIONS = ("se", "eca", "none")


def count_params(module: nn.Module) -> int:
    """Trainable parameters, counted as the notebook does (buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


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


def make_attention(attn: str | None, channels: int, reduction: int = 16) -> nn.Module | None:
    """The channel attention named ``attn`` (``"se"``, ``"eca"``, ``None``/``"none"``)."""
    if attn == "se":
        return SEBlock(channels, reduction=reduction)
    if attn == "eca":
        return ECABlock(channels)
    if attn in (None, "none"):
        return None
    raise ValueError(f"unknown attention {attn!r}; expected one of {ATTENTIONS} or None")
