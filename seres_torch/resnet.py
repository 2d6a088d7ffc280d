"""PyTorch SE / ECA ResNets, ResNeXts and SENet-154 with timm's architecture and ``state_dict``
layout (timm's ``resnet.py``; its ``legacy_*`` SENets are ``seres_torch.senet``).

One ``SEResNet`` with timm's options builds every zoo model: basic blocks or bottlenecks
(grouped 3×3 convolutions for ResNeXts), the 7×7 stem or the deep 3×3 stems (``stem_type``
``"deep"``: ``stem_width, stem_width, 2·stem_width``; ``"deep_tiered"``: ``3·(stem_width//4),
stem_width, 2·stem_width``), projection shortcuts by strided convolution (``down_kernel_size``
1 or 3) or by average pooling (``avg_down``, the ``d``/``t`` models), anti-aliasing
(``aa_layer="avg"``: timm's ``aa_layer=nn.AvgPool2d``), SENet-154's halved first bottleneck
width (``block_reduce_first=2``) and the pruned models' per-block widths (``block_widths``).
Key names (``conv1``, ``bn1``, ``layerN.i.conv1``, ``layerN.i.se.fc1``/``fc2``,
``layerN.i.downsample.0``/``.1``, ``fc``), shapes, parameter counts and function are timm's:
a 3×3/2 max-pool with padding 1 after the stem, attention after the block's last BatchNorm and
before the residual add (``attn`` names any attention of ``layers.create_attn``: ``"se"`` is
timm's ``SEModule``, ``"eca"`` its ``EcaModule``).

Regularisation as timm's, off by default: stochastic depth (``drop_path_rate``, a ``DropPath``
on each block's residual branch after the attention and before the add, its rate rising
linearly over the whole network by ``drop_path_rates``) and dropout before ``fc``
(``drop_rate``, timm's ``F.dropout`` in ``forward_head``). Neither adds a parameter or a
``state_dict`` key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    DropPath,
    SEModule,
    check_widths,
    create_attn,
    eca_kernel_size,
    make_divisible,
)

# SEModule and make_divisible lived here before the attention vocabulary moved to layers.
__all__ = [
    "AA_LAYERS",
    "BLOCKS",
    "STEM_TYPES",
    "ZOO",
    "BasicBlock",
    "Bottleneck",
    "SEModule",
    "SEResNet",
    "anti_alias",
    "create_model",
    "drop_path_rates",
    "make_divisible",
]


STEM_TYPES = ("", "deep", "deep_tiered")
"""timm's ``stem_type`` values: ``""`` a 7×7 convolution, ``"deep"`` three 3×3 ones,
``"deep_tiered"`` three 3×3 ones with a narrower first (the "d" and "t" models)."""
AA_LAYERS = ("avg",)
"""timm's anti-aliasing layers by ``create_aa``'s names (``aa_layer``): ``"avg"`` is its
``aa_layer=nn.AvgPool2d``."""


def _downsample(
    cin: int, cout: int, stride: int, avg_down: bool, kernel_size: int = 1
) -> nn.Sequential:
    """timm's ``downsample_avg`` (ceil-mode 2×2 average pool, then a 1×1 convolution) or
    ``downsample_conv`` (a ``kernel_size`` convolution, 1×1 when it does not stride)."""
    if avg_down:
        pool: nn.Module = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride != 1
            else nn.Identity()
        )
        return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
    k = kernel_size if stride != 1 else 1
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=(stride - 1 + k - 1) // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout))


def anti_alias(aa_layer: str | None, stride: int = 2) -> nn.Module:
    """timm's ``create_aa`` for ``nn.AvgPool2d``: a 2×2/2 average pool without padding (floor
    mode) that takes over a convolution's stride; the identity without anti-aliasing."""
    if aa_layer is None or stride == 1:
        return nn.Identity()
    if aa_layer not in AA_LAYERS:
        raise ValueError(f"unknown aa_layer {aa_layer!r}; expected one of {AA_LAYERS} or None")
    return nn.AvgPool2d(stride)


def _attention(attn: str | None, channels: int, unpruned: int) -> nn.Module | None:
    # timm prunes a block's convolutions, not its attention module: ECA keeps the kernel size
    # of the unpruned width (the same size whenever the block is not pruned).
    kwargs: dict[str, Any] = {"kernel_size": eca_kernel_size(unpruned)} if attn == "eca" else {}
    return create_attn(attn, channels, **kwargs)


def drop_path_rates(drop_path_rate: float, layers: Sequence[int]) -> list[float]:
    """Each block's stochastic-depth rate, in order: timm's linear decay rule over the whole
    network, ``drop_path_rate * i / (n - 1)`` for block ``i`` of ``n``: 0 for the first,
    ``drop_path_rate`` for the last, to the rounding of timm's order of operations (which the
    rates keep bit for bit: 0.1 over four blocks ends on 0.30000000000000004 / 3)."""
    n = sum(layers)
    return [drop_path_rate * i / max(n - 1, 1) for i in range(n)]


def _drop_path(rate: float) -> DropPath | None:
    # As timm: no module at all where a block's rate is 0 (the first block's always is).
    return DropPath(rate) if rate > 0.0 else None


def _attend_and_add(
    block: BasicBlock | Bottleneck, y: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """A residual branch's end: attention (if any), stochastic depth (if any), then the
    shortcut (projected if needed)."""
    if block.se is not None:
        y = block.se(y)
    if block.drop_path is not None:
        y = block.drop_path(y)
    return y + (x if block.downsample is None else block.downsample(x))


class BasicBlock(nn.Module):
    """conv3×3(stride)-BN-ReLU(-anti-alias) → conv3×3-BN → attention → drop path → + shortcut
    → ReLU.

    ``widths``: the output widths of ``conv1`` and ``conv2`` (a pruned block's); by default
    ``planes // reduce_first`` and ``planes``. ``drop_path``: the branch's stochastic-depth
    rate (timm passes the ``DropPath`` module; the ``drop_path`` attribute is that module, or
    ``None`` at rate 0 as in timm)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        attn: str | None = "se",
        reduce_first: int = 1,
        aa_layer: str | None = None,
        widths: Sequence[int] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality 1 and base_width 64")
        first, out = widths or (planes // reduce_first, planes)
        self.aa = anti_alias(aa_layer, stride)
        conv_stride = 1 if aa_layer is not None else stride  # the pool strides instead
        self.conv1 = nn.Conv2d(inplanes, first, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(first, out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.se = _attention(attn, out, planes * self.expansion)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = _drop_path(drop_path)

    def last_bn(self) -> nn.BatchNorm2d:
        """The branch's last BatchNorm, whose scale ``zero_init_last`` zeroes."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aa(self.act1(self.bn1(self.conv1(x))))
        return self.act2(_attend_and_add(self, self.bn2(self.conv2(y)), x))


class Bottleneck(nn.Module):
    """1×1-BN-ReLU → grouped 3×3(stride)-BN-ReLU(-anti-alias) → 1×1-BN → attention →
    drop path → + shortcut → ReLU.

    ``widths``: the output widths of ``conv1``, ``conv2`` and ``conv3`` (a pruned block's); by
    default ``width // reduce_first``, ``width`` and ``4 * planes`` with
    ``width = floor(planes * base_width / 64) * cardinality``. ``drop_path`` as in
    ``BasicBlock``."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        attn: str | None = "se",
        reduce_first: int = 1,
        aa_layer: str | None = None,
        widths: Sequence[int] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64)) * cardinality
        first, width, outplanes = widths or (width // reduce_first, width, planes * self.expansion)
        self.conv1 = nn.Conv2d(inplanes, first, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        self.act1 = nn.ReLU(inplace=True)
        conv_stride = 1 if aa_layer is not None else stride  # the pool strides instead
        self.conv2 = nn.Conv2d(
            first, width, 3, stride=conv_stride, padding=1, groups=cardinality, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.aa = anti_alias(aa_layer, stride)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = _attention(attn, outplanes, planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = _drop_path(drop_path)

    def last_bn(self) -> nn.BatchNorm2d:
        """The branch's last BatchNorm, whose scale ``zero_init_last`` zeroes."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.aa(self.act2(self.bn2(self.conv2(y))))
        y = self.bn3(self.conv3(y))
        return self.act3(_attend_and_add(self, y, x))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}
"""The block classes ``SEResNet``'s ``block`` may name."""


def _stem_widths(stem_type: str, stem_width: int) -> tuple[int, int, int]:
    """The deep stem's three convolution widths (timm's ``stem_chs`` and ``inplanes``)."""
    if stem_type not in STEM_TYPES:
        raise ValueError(f"unknown stem_type {stem_type!r}; expected one of {STEM_TYPES}")
    first = 3 * (stem_width // 4) if stem_type == "deep_tiered" else stem_width
    return first, stem_width, 2 * stem_width


def _block_widths(
    block_widths: Sequence[Sequence[int]] | None, layers: Sequence[int]
) -> list[Sequence[int] | None]:
    """Each block's ``widths`` (``None``: the block's own rule), checked against ``layers``."""
    if block_widths is None:
        return [None] * sum(layers)
    if len(block_widths) != sum(layers):
        raise ValueError(
            f"block_widths has {len(block_widths)} entries, layers {tuple(layers)} make "
            f"{sum(layers)} blocks"
        )
    return list(block_widths)


class SEResNet(nn.Module):
    """timm's ``ResNet`` with SE (or ECA) blocks: stem, max-pool, ``layer1``..``layer4``, fc.

    The arguments are timm's (``stem_type``, ``block_reduce_first``, ``down_kernel_size``,
    ``avg_down``, ``aa_layer``), with ``attn`` for its ``block_args=dict(attn_layer=...)`` and
    ``block_widths`` for the channel counts its pruned models read from
    ``timm/models/_pruned/*.txt``: one tuple per block, in order, of its convolutions' output
    widths (the last one is the stage's width, shared by all its blocks).

    ``drop_rate`` (dropout before ``fc``) and ``drop_path_rate`` (stochastic depth, per block by
    ``drop_path_rates``) are timm's regularisers, 0 by default as in timm."""

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_chans: int = 3,
        cardinality: int = 1,
        base_width: int = 64,
        stem_width: int = 64,
        stem_type: str = "",
        block_reduce_first: int = 1,
        down_kernel_size: int = 1,
        avg_down: bool = False,
        aa_layer: str | None = None,
        attn: str | None = "se",
        channels: Sequence[int] = (64, 128, 256, 512),
        block_widths: Sequence[Sequence[int]] | None = None,
        zero_init_last: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        block_cls = BLOCKS[block]
        stem = _stem_widths(stem_type, stem_width)
        inplanes = stem[2] if stem_type else 64  # timm ignores stem_width for the 7×7 stem
        if stem_type:
            self.conv1: nn.Module = nn.Sequential(
                nn.Conv2d(in_chans, stem[0], 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(stem[0]),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem[0], stem[1], 3, padding=1, bias=False),
                nn.BatchNorm2d(stem[1]),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem[1], inplanes, 3, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        # With anti-aliasing timm replaces the max-pool by the 2×2/2 average pool.
        self.maxpool = anti_alias(aa_layer) if aa_layer else nn.MaxPool2d(3, stride=2, padding=1)
        widths = iter(_block_widths(block_widths, layers))
        rates = iter(drop_path_rates(drop_path_rate, layers))
        stages = []
        for index, (planes, repeats) in enumerate(zip(channels, layers, strict=True)):
            stride = 1 if index == 0 else 2
            outplanes = planes * block_cls.expansion
            # timm decides on a projection before pruning; the stem is never pruned, so
            # inplanes is unpruned where the stride is 1 (the first stage).
            project = stride != 1 or inplanes != outplanes
            blocks = []
            for i in range(repeats):
                block_width = next(widths)
                width = block_width[-1] if block_width else outplanes
                downsample = None
                if i == 0 and project:
                    downsample = _downsample(inplanes, width, stride, avg_down, down_kernel_size)
                blocks.append(
                    block_cls(
                        inplanes,
                        planes,
                        stride if i == 0 else 1,
                        downsample,
                        cardinality,
                        base_width,
                        attn,
                        reduce_first=block_reduce_first,
                        aa_layer=aa_layer,
                        widths=block_width,
                        drop_path=next(rates),
                    )
                )
                inplanes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(inplanes, num_classes)
        check_widths(self)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        # timm's init: He-normal (fan_out) convolutions, optionally a zero last BN per block.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_bn().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.mean((2, 3))
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return self.fc(x)


# timm's deep stems with average-pool shortcuts: the "d" and "t" (tiered) models.
_D = dict(stem_width=32, stem_type="deep", avg_down=True)
_T = dict(stem_width=32, stem_type="deep_tiered", avg_down=True)
_B, _X = dict(block="bottleneck"), dict(block="bottleneck", cardinality=32)
# Per-block output widths of (conv1, conv2, conv3) of timm's pruned models, from
# timm/models/_pruned/ecaresnet{50d,101d}_pruned.txt (Knapsack pruning, arXiv 2002.08258).
_PRUNED_50D = (
    (47, 18, 19),
    (52, 22, 19),
    (64, 35, 19),
    (85, 37, 171),
    (107, 80, 171),
    (120, 85, 171),
    (125, 87, 171),
    (198, 126, 818),
    (255, 232, 818),
    (256, 233, 818),
    (253, 235, 818),
    (256, 225, 818),
    (256, 239, 818),
    (492, 237, 2022),
    (512, 500, 2022),
    (512, 490, 2022),
)
_PRUNED_101D = (
    (45, 25, 26),
    (53, 20, 26),
    (60, 27, 26),
    (81, 24, 142),
    (93, 49, 142),
    (102, 54, 142),
    (122, 78, 142),
    (101, 25, 278),
    (239, 160, 278),
    (234, 156, 278),
    (250, 176, 278),
    (253, 191, 278),
    (251, 175, 278),
    (230, 128, 278),
    (244, 154, 278),
    (244, 159, 278),
    (238, 97, 278),
    (244, 149, 278),
    (253, 181, 278),
    (245, 119, 278),
    (255, 216, 278),
    (256, 201, 278),
    (253, 149, 278),
    (254, 141, 278),
    (256, 190, 278),
    (256, 217, 278),
    (255, 156, 278),
    (256, 155, 278),
    (256, 232, 278),
    (256, 214, 278),
    (499, 289, 2042),
    (512, 512, 2042),
    (512, 502, 2042),
)
ZOO: dict[str, dict[str, Any]] = {
    "seresnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "seresnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "seresnet50": dict(_B, layers=(3, 4, 6, 3)),
    "seresnet50t": dict(_B, layers=(3, 4, 6, 3), **_T),
    "seresnet101": dict(_B, layers=(3, 4, 23, 3)),
    "seresnet152": dict(_B, layers=(3, 8, 36, 3)),
    "seresnet152d": dict(_B, layers=(3, 8, 36, 3), **_D),
    "seresnet200d": dict(_B, layers=(3, 24, 36, 3), **_D),
    "seresnet269d": dict(_B, layers=(3, 30, 48, 8), **_D),
    "seresnetaa50d": dict(_B, layers=(3, 4, 6, 3), aa_layer="avg", **_D),
    "seresnext26d_32x4d": dict(_X, layers=(2, 2, 2, 2), base_width=4, **_D),
    "seresnext26t_32x4d": dict(_X, layers=(2, 2, 2, 2), base_width=4, **_T),
    "seresnext50_32x4d": dict(_X, layers=(3, 4, 6, 3), base_width=4),
    "seresnext101_32x4d": dict(_X, layers=(3, 4, 23, 3), base_width=4),
    "seresnext101_32x8d": dict(_X, layers=(3, 4, 23, 3), base_width=8),
    "seresnext101_64x4d": dict(_B, layers=(3, 4, 23, 3), cardinality=64, base_width=4),
    "seresnext101d_32x8d": dict(_X, layers=(3, 4, 23, 3), base_width=8, **_D),
    "seresnextaa101d_32x8d": dict(_X, layers=(3, 4, 23, 3), base_width=8, aa_layer="avg", **_D),
    "seresnextaa201d_32x8d": dict(
        _X, layers=(3, 24, 36, 4), base_width=8, aa_layer="avg", **dict(_D, stem_width=64)
    ),
    "senet154": dict(
        _B, layers=(3, 8, 36, 3), cardinality=64, base_width=4, stem_type="deep",
        down_kernel_size=3, block_reduce_first=2,
    ),
    "ecaresnet26t": dict(_B, layers=(2, 2, 2, 2), attn="eca", **_T),
    "ecaresnet50d": dict(_B, layers=(3, 4, 6, 3), attn="eca", **_D),
    "ecaresnet50d_pruned": dict(
        _B, layers=(3, 4, 6, 3), attn="eca", block_widths=_PRUNED_50D, **_D
    ),
    "ecaresnet50t": dict(_B, layers=(3, 4, 6, 3), attn="eca", **_T),
    "ecaresnet101d": dict(_B, layers=(3, 4, 23, 3), attn="eca", **_D),
    "ecaresnet101d_pruned": dict(
        _B, layers=(3, 4, 23, 3), attn="eca", block_widths=_PRUNED_101D, **_D
    ),
    "ecaresnet200d": dict(_B, layers=(3, 24, 36, 3), attn="eca", **_D),
    "ecaresnet269d": dict(_B, layers=(3, 30, 48, 8), attn="eca", **_D),
    # 7×7 stem (timm ignores its stem_width=32 there) with average-pool shortcuts.
    "ecaresnetlight": dict(_B, layers=(1, 1, 11, 3), attn="eca", avg_down=True),
    "ecaresnext26t_32x4d": dict(_X, layers=(2, 2, 2, 2), base_width=4, attn="eca", **_T),
    "ecaresnext50t_32x4d": dict(_X, layers=(3, 4, 6, 3), base_width=4, attn="eca", **_T),
}  # fmt: skip
"""timm's SE and ECA ResNets by timm's name: each one's ``SEResNet`` arguments, timm's own
(its ``block_args``' ``attn_layer`` as ``attn``); ``create_model`` builds them."""


def create_model(name: str, **overrides: object) -> SEResNet:
    """A zoo model by timm's name, e.g. ``create_model("seresnet50", num_classes=10)``."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return SEResNet(**{**ZOO[name], **overrides})
