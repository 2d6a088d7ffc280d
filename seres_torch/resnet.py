"""PyTorch SE-ResNet / SE-ResNeXt family with timm's architecture and ``state_dict`` layout.

``seresnet18/34`` (basic blocks), ``seresnet50/101/152`` (bottlenecks) and
``seresnext26d_32x4d``, ``seresnext50_32x4d`` (grouped 3×3 convolutions; ``d``: deep stem and
average-pool downsampling), with timm's key names (``conv1``, ``bn1``, ``layerN.i.conv1``,
``layerN.i.se.fc1``/``fc2``, ``layerN.i.downsample.0``/``.1``, ``fc``), shapes, parameter counts
and function: stem 7×7/2 (or the deep 3×3 stem) and a 3×3/2 max-pool with padding 1, SE after
the block's last BatchNorm and before the residual add (``attn`` names any attention of
``layers.create_attn``; ``"se"`` is timm's ``SEModule``). Not timm's ``legacy_seresnet*``, which
put the stride on the first 1×1 convolution and use a ceil-mode max-pool without padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import SEModule, create_attn, make_divisible

# SEModule and make_divisible lived here before the attention vocabulary moved to layers.
__all__ = [
    "BLOCKS",
    "ZOO",
    "BasicBlock",
    "Bottleneck",
    "SEModule",
    "SEResNet",
    "create_model",
    "make_divisible",
]


def _downsample(cin: int, cout: int, stride: int, avg_down: bool) -> nn.Sequential:
    if avg_down:
        pool: nn.Module = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride != 1
            else nn.Identity()
        )
        return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def _attend_and_add(
    block: BasicBlock | Bottleneck, y: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """A residual branch's end: attention (if any), then the shortcut (projected if needed)."""
    if block.se is not None:
        y = block.se(y)
    return y + (x if block.downsample is None else block.downsample(x))


class BasicBlock(nn.Module):
    """conv3×3(stride)-BN-ReLU → conv3×3-BN → attention → + shortcut → ReLU."""

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
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality 1 and base_width 64")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = create_attn(attn, planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(_attend_and_add(self, y, x))


class Bottleneck(nn.Module):
    """1×1-BN-ReLU → grouped 3×3(stride)-BN-ReLU → 1×1-BN → attention → + shortcut → ReLU."""

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
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64)) * cardinality
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = create_attn(attn, outplanes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.act3(_attend_and_add(self, y, x))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class SEResNet(nn.Module):
    """timm's ``ResNet`` with SE (or ECA) blocks: stem, max-pool, ``layer1``..``layer4``, fc."""

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_chans: int = 3,
        cardinality: int = 1,
        base_width: int = 64,
        stem_width: int = 64,
        deep_stem: bool = False,
        avg_down: bool = False,
        attn: str | None = "se",
        channels: Sequence[int] = (64, 128, 256, 512),
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        block_cls = BLOCKS[block]
        inplanes = stem_width * 2 if deep_stem else 64  # timm ignores stem_width here
        if deep_stem:
            self.conv1: nn.Module = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_width, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, inplanes, 3, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        for index, (planes, repeats) in enumerate(zip(channels, layers, strict=True)):
            stride = 1 if index == 0 else 2
            outplanes = planes * block_cls.expansion
            blocks = []
            for i in range(repeats):
                downsample = None
                if i == 0 and (stride != 1 or inplanes != outplanes):
                    downsample = _downsample(inplanes, outplanes, stride, avg_down)
                blocks.append(
                    block_cls(
                        inplanes,
                        planes,
                        stride if i == 0 else 1,
                        downsample,
                        cardinality,
                        base_width,
                        attn,
                    )
                )
                inplanes = outplanes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(inplanes, num_classes)
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
        return self.fc(x.mean((2, 3)))


# Each zoo model's constructor arguments (timm's, with attn="se").
ZOO: dict[str, dict] = {
    "seresnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "seresnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "seresnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "seresnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "seresnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    "seresnext26d_32x4d": dict(
        block="bottleneck", layers=(2, 2, 2, 2), cardinality=32, base_width=4, stem_width=32,
        deep_stem=True, avg_down=True,
    ),
    "seresnext50_32x4d": dict(
        block="bottleneck", layers=(3, 4, 6, 3), cardinality=32, base_width=4
    ),
}  # fmt: skip


def create_model(name: str, **overrides: object) -> SEResNet:
    """A zoo model by timm's name, e.g. ``create_model("seresnet50", num_classes=10)``."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return SEResNet(**{**ZOO[name], **overrides})
