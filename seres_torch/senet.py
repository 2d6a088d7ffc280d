"""PyTorch SENet: the SENet authors' own models, as timm's ``senet.py`` builds them.

``legacy_seresnet18/34`` (basic blocks), ``legacy_seresnet50/101/152`` (bottlenecks),
``legacy_seresnext26/50/101_32x4d`` and ``legacy_senet154``, with their own key names
(``layer0.conv1``, ``layer1.0.se_module.fc1``, ``layer2.0.downsample.0``, ``last_linear``),
shapes, parameter counts and function, which differ from timm's ResNet family
(``seres_torch.resnet``) and so have their own module:

* the stem (``layer0``) is conv-BN-ReLU (SENet-154: three 3×3 of them, ``input_3x3``), then a
  3×3/2 max-pool in ceil mode *without* padding (the Caffe weights' geometry);
* an SE-ResNet bottleneck strides its first 1×1 convolution, not the 3×3;
* the basic block has a ReLU after its second BatchNorm, before the SE;
* the SE squeeze width is ``channels // reduction`` (``layers.SEModule`` with ``rd_channels``,
  keys ``fc1``/``fc2`` as in timm's ``SEModule``);
* SENet-154 projects the shortcut of ``layer2``..``layer4`` with a 3×3 convolution
  (``downsample_kernel_size=3``, ``downsample_padding=1``);
* dropout (``drop_rate``, timm's default 0.2 for all of them) before ``last_linear``, and no
  stochastic depth: timm's ``SENet`` takes no ``drop_path_rate`` (``timm.create_model(
  "legacy_seresnet18", drop_path_rate=0.1)`` is a ``TypeError``), and neither does this one.

Constructor arguments follow timm's ``SENet`` (``inplanes``, ``input_3x3``, ``reduction``,
``downsample_kernel_size``, ``downsample_padding``, ``drop_rate``) except ``cardinality`` (timm:
``groups``) and ``block`` (a name of ``BLOCKS``), as in ``seres_torch.resnet``; ``channels``
(timm's fixed 64, 128, 256, 512) allows reduced widths.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SEModule, check_widths

__all__ = [
    "BLOCKS",
    "LEGACY_ZOO",
    "Bottleneck",
    "SEBottleneck",
    "SENet",
    "SEResNeXtBottleneck",
    "SEResNetBlock",
    "SEResNetBottleneck",
    "create_model",
]


def _se_and_add(
    block: SEResNetBlock | Bottleneck, y: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """A residual branch's end: SE, then the shortcut (projected if needed), then ReLU."""
    shortcut = x if block.downsample is None else block.downsample(x)
    return block.relu(block.se_module(y) + shortcut)


class SEResNetBlock(nn.Module):
    """conv3×3(stride)-BN-ReLU → conv3×3-BN-ReLU → SE → + shortcut → ReLU."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(planes, rd_channels=planes // reduction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return _se_and_add(self, y, x)


class Bottleneck(nn.Module):
    """1×1-BN-ReLU → grouped 3×3-BN-ReLU → 1×1-BN → SE → + shortcut → ReLU, as timm's base
    ``Bottleneck``; each subclass fixes the two inner widths and which convolution strides."""

    expansion = 4
    # The authors' Caffe ResNets stride the first 1×1 convolution; the others the 3×3.
    stride_first = False

    @staticmethod
    def widths(planes: int, cardinality: int) -> tuple[int, int]:
        """Output channels of ``conv1`` and ``conv2``."""
        raise NotImplementedError

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        reduction: int = 16,
    ) -> None:
        super().__init__()
        width1, width2 = self.widths(planes, cardinality)
        outplanes = planes * self.expansion
        stride1, stride2 = (stride, 1) if self.stride_first else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width1, 1, stride=stride1, bias=False)
        self.bn1 = nn.BatchNorm2d(width1)
        self.conv2 = nn.Conv2d(
            width1, width2, 3, stride=stride2, padding=1, groups=cardinality, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width2)
        self.conv3 = nn.Conv2d(width2, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(outplanes, rd_channels=outplanes // reduction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return _se_and_add(self, self.bn3(self.conv3(y)), x)


class SEBottleneck(Bottleneck):
    """SENet-154's: ``conv1`` to 2·planes, grouped ``conv2`` (stride) widening to 4·planes."""

    @staticmethod
    def widths(planes: int, cardinality: int) -> tuple[int, int]:
        """Output channels of ``conv1`` and ``conv2``: 2·planes and 4·planes."""
        return planes * 2, planes * 4


class SEResNetBottleneck(Bottleneck):
    """The SE-ResNets': both inner widths ``planes``, the stride on ``conv1``."""

    stride_first = True

    @staticmethod
    def widths(planes: int, cardinality: int) -> tuple[int, int]:
        """Output channels of ``conv1`` and ``conv2``: ``planes`` each."""
        return planes, planes


class SEResNeXtBottleneck(Bottleneck):
    """The SE-ResNeXts': ``cardinality`` groups of ``planes * 4 // 64`` channels (timm fixes
    the base width at 4), the stride on ``conv2``."""

    @staticmethod
    def widths(planes: int, cardinality: int) -> tuple[int, int]:
        """Output channels of ``conv1`` and ``conv2``: ``cardinality`` groups of
        ``planes * 4 // 64`` each."""
        width = planes * 4 // 64 * cardinality
        return width, width


BLOCKS: dict[str, type[SEResNetBlock] | type[Bottleneck]] = {
    "basic": SEResNetBlock,
    "bottleneck": SEResNetBottleneck,
    "resnext": SEResNeXtBottleneck,
    "senet": SEBottleneck,
}
"""The block classes ``SENet``'s ``block`` may name."""


def _stem(in_chans: int, inplanes: int, input_3x3: bool) -> nn.Sequential:
    """``layer0``: conv7×7/2-BN-ReLU, or three conv3×3-BN-ReLU (64, 64, ``inplanes``)."""
    if input_3x3:
        geometry = [(64, 3, 2, 1), (64, 3, 1, 1), (inplanes, 3, 1, 1)]
    else:
        geometry = [(inplanes, 7, 2, 3)]
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    cin = in_chans
    for i, (cout, k, stride, padding) in enumerate(geometry, 1):
        modules[f"conv{i}"] = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        modules[f"bn{i}"] = nn.BatchNorm2d(cout)
        modules[f"relu{i}"] = nn.ReLU(inplace=True)
        cin = cout
    return nn.Sequential(modules)


class SENet(nn.Module):
    """timm's ``SENet``: ``layer0``, ceil-mode max-pool, ``layer1``..``layer4``, average
    pool, dropout, ``last_linear``."""

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_chans: int = 3,
        cardinality: int = 1,
        reduction: int = 16,
        inplanes: int = 64,
        input_3x3: bool = False,
        downsample_kernel_size: int = 1,
        downsample_padding: int = 0,
        drop_rate: float = 0.2,
        channels: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        block_cls = BLOCKS[block]
        self.drop_rate = drop_rate
        self.layer0 = _stem(in_chans, inplanes, input_3x3)
        self.pool0 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        stages = []
        for index, (planes, repeats) in enumerate(zip(channels, layers, strict=True)):
            # layer1 does not stride, and projects (if at all) with a 1×1 convolution.
            stride = 1 if index == 0 else 2
            k, pad = (1, 0) if index == 0 else (downsample_kernel_size, downsample_padding)
            outplanes = planes * block_cls.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, outplanes, k, stride=stride, padding=pad, bias=False),
                    nn.BatchNorm2d(outplanes),
                )
            blocks = [block_cls(inplanes, planes, stride, downsample, cardinality, reduction)]
            blocks += [
                block_cls(outplanes, planes, 1, None, cardinality, reduction)
                for _ in range(1, repeats)
            ]
            stages.append(nn.Sequential(*blocks))
            inplanes = outplanes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.last_linear = nn.Linear(inplanes, num_classes)
        check_widths(self)
        # timm's init: He-normal (fan_out) convolutions, the SE's included; PyTorch's defaults
        # for BatchNorm (1, 0) and the classifier.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(self.layer0(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.last_linear(x)


LEGACY_ZOO: dict[str, dict] = {
    "legacy_seresnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "legacy_seresnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "legacy_seresnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "legacy_seresnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "legacy_seresnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    "legacy_seresnext26_32x4d": dict(block="resnext", layers=(2, 2, 2, 2), cardinality=32),
    "legacy_seresnext50_32x4d": dict(block="resnext", layers=(3, 4, 6, 3), cardinality=32),
    "legacy_seresnext101_32x4d": dict(block="resnext", layers=(3, 4, 23, 3), cardinality=32),
    "legacy_senet154": dict(
        block="senet", layers=(3, 8, 36, 3), cardinality=64, inplanes=128, input_3x3=True,
        downsample_kernel_size=3, downsample_padding=1,
    ),
}  # fmt: skip
"""timm's ``legacy_*`` models (the SENet authors', timm's ``senet.py``) by timm's name: each
one's ``SENet`` arguments (``drop_rate`` is timm's 0.2 for all); ``create_model`` builds
them."""


def create_model(name: str, **overrides: object) -> SENet:
    """A legacy model by timm's name, e.g. ``create_model("legacy_seresnet50", num_classes=10)``."""
    if name not in LEGACY_ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(LEGACY_ZOO)}")
    return SENet(**{**LEGACY_ZOO[name], **overrides})
