"""Flax SENet: the SENet authors' own models, mirroring ``seres_torch.senet`` (timm's
``senet.py``, the ``legacy_*`` models).

Parameter names follow timm's keys through the converter's naming rule (``layer0/conv1``,
``layer1_0/se_module/fc1``, ``layer2_0/downsample_0``, ``last_linear``), so a timm
``state_dict`` converts strictly. See ``seres_torch.senet`` for how the function differs from
the ResNet family; the pieces that do not differ are shared (``layers.conv2d``, ``BatchNorm``,
``SEModule``; the He-normal convolutions of ``seres_jax.resnet``). NHWC, explicit padding.

As in ``seres_jax.resnet``, a block builds its ``downsample`` from ``project`` (plus the
shortcut convolution's ``downsample_kernel_size`` and ``downsample_padding``) where the PyTorch
block receives the module. Dropout before ``last_linear`` (``drop_rate``, timm's 0.2) draws from
the ``"dropout"`` RNG stream in train mode: ``apply(..., train=True, rngs={"dropout": key})``.
As in timm, there is no stochastic depth (no ``drop_path_rate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import HE_NORMAL, BatchNorm, Dtype, SEModule, torch_uniform
from .resnet import _conv

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
    "max_pool_ceil",
]

LEGACY_ZOO: dict[str, dict[str, Any]] = {
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
"""timm's ``legacy_*`` models (the SENet authors') by timm's name: each one's ``SENet``
arguments; ``create_model`` builds them."""


def max_pool_ceil(x: jax.Array) -> jax.Array:
    """``MaxPool2d(3, stride=2, ceil_mode=True)`` (no padding) on NHWC: where the windows do
    not tile the input, a last one overhangs its end and takes the max of what it covers."""
    pad = []
    for n in x.shape[1:3]:
        out = -(-(n - 3) // 2) + 1  # ceil((n - 3) / 2) + 1 windows
        pad.append((0, (out - 1) * 2 + 3 - n))
    # nn.max_pool pads with -inf, which never wins a max.
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=tuple(pad))


class _Block(nn.Module):
    expansion: ClassVar[int] = 1
    inplanes: int
    planes: int
    stride: int = 1
    project: bool = False
    cardinality: int = 1
    reduction: int = 16
    downsample_kernel_size: int = 1
    downsample_padding: int = 0
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def _common(self, outplanes: int) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.se_module = SEModule(
            outplanes, rd_channels=outplanes // self.reduction, kernel_init=HE_NORMAL, **dt
        )
        k, pad = self.downsample_kernel_size, self.downsample_padding
        self.downsample = (
            [_conv(self.inplanes, outplanes, k, self.stride, pad, **dt), BatchNorm(**dt)]
            if self.project
            else None
        )

    def _se_and_add(self, y: jax.Array, x: jax.Array, train: bool) -> jax.Array:
        shortcut = x
        if self.downsample is not None:
            conv, bn = self.downsample
            shortcut = bn(conv(x), train)
        return nn.relu(self.se_module(y) + shortcut)


class SEResNetBlock(_Block):
    """conv3×3(stride)-BN-ReLU → conv3×3-BN-ReLU → SE → + shortcut → ReLU."""

    expansion = 1

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.conv1 = _conv(self.inplanes, self.planes, 3, self.stride, 1, **dt)
        self.bn1 = BatchNorm(**dt)
        self.conv2 = _conv(self.planes, self.planes, 3, 1, 1, groups=self.cardinality, **dt)
        self.bn2 = BatchNorm(**dt)
        self._common(self.planes)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(self.bn1(self.conv1(x), train))
        y = nn.relu(self.bn2(self.conv2(y), train))
        return self._se_and_add(y, x, train)


class Bottleneck(_Block):
    """1×1-BN-ReLU → grouped 3×3-BN-ReLU → 1×1-BN → SE → + shortcut → ReLU; each subclass
    fixes the two inner widths and which convolution strides (``seres_torch.senet``)."""

    expansion = 4
    stride_first: ClassVar[bool] = False

    @staticmethod
    def widths(planes: int, cardinality: int) -> tuple[int, int]:
        """Output channels of ``conv1`` and ``conv2``."""
        raise NotImplementedError

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width1, width2 = self.widths(self.planes, self.cardinality)
        outplanes = self.planes * self.expansion
        stride1, stride2 = (self.stride, 1) if self.stride_first else (1, self.stride)
        self.conv1 = _conv(self.inplanes, width1, 1, stride1, **dt)
        self.bn1 = BatchNorm(**dt)
        self.conv2 = _conv(width1, width2, 3, stride2, 1, groups=self.cardinality, **dt)
        self.bn2 = BatchNorm(**dt)
        self.conv3 = _conv(width2, outplanes, 1, **dt)
        self.bn3 = BatchNorm(**dt)
        self._common(outplanes)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(self.bn1(self.conv1(x), train))
        y = nn.relu(self.bn2(self.conv2(y), train))
        return self._se_and_add(self.bn3(self.conv3(y), train), x, train)


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
    """The SE-ResNeXts': ``cardinality`` groups of ``planes * 4 // 64`` channels, the stride
    on ``conv2``."""

    @staticmethod
    def widths(planes: int, cardinality: int) -> tuple[int, int]:
        """Output channels of ``conv1`` and ``conv2``: ``cardinality`` groups of
        ``planes * 4 // 64`` each."""
        width = planes * 4 // 64 * cardinality
        return width, width


BLOCKS: dict[str, type[_Block]] = {
    "basic": SEResNetBlock,
    "bottleneck": SEResNetBottleneck,
    "resnext": SEResNeXtBottleneck,
    "senet": SEBottleneck,
}
"""The block classes ``SENet``'s ``block`` may name."""


class _Stem(nn.Module):
    """``layer0``: conv7×7/2-BN-ReLU, or three conv3×3-BN-ReLU (64, 64, ``inplanes``)."""

    in_chans: int
    inplanes: int
    input_3x3: bool
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.input_3x3:
            geometry = [(64, 3, 2, 1), (64, 3, 1, 1), (self.inplanes, 3, 1, 1)]
        else:
            geometry = [(self.inplanes, 7, 2, 3)]
        cin = self.in_chans
        for i, (cout, k, stride, padding) in enumerate(geometry, 1):
            x = _conv(cin, cout, k, stride, padding, name=f"conv{i}", **dt)(x)
            x = nn.relu(BatchNorm(name=f"bn{i}", **dt)(x, train))
            cin = cout
        return x


class SENet(nn.Module):
    """timm's ``SENet``; mirror of ``seres_torch.senet.SENet``."""

    block: str = "bottleneck"
    layers: Sequence[int] = (3, 4, 6, 3)
    num_classes: int = 1000
    in_chans: int = 3
    cardinality: int = 1
    reduction: int = 16
    inplanes: int = 64
    input_3x3: bool = False
    downsample_kernel_size: int = 1
    downsample_padding: int = 0
    drop_rate: float = 0.2
    channels: Sequence[int] = (64, 128, 256, 512)
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_cls = BLOCKS[self.block]
        inplanes = self.inplanes
        self.layer0 = _Stem(self.in_chans, inplanes, self.input_3x3, **dt)
        stages = []
        for index, (planes, repeats) in enumerate(zip(self.channels, self.layers, strict=True)):
            # layer1 does not stride, and projects (if at all) with a 1×1 convolution.
            stride = 1 if index == 0 else 2
            k, pad = (
                (1, 0) if index == 0 else (self.downsample_kernel_size, self.downsample_padding)
            )
            outplanes = planes * block_cls.expansion
            blocks = []
            for i in range(repeats):
                blocks.append(
                    block_cls(
                        inplanes if i == 0 else outplanes,
                        planes,
                        stride if i == 0 else 1,
                        project=i == 0 and (stride != 1 or inplanes != outplanes),
                        cardinality=self.cardinality,
                        reduction=self.reduction,
                        downsample_kernel_size=k,
                        downsample_padding=pad,
                        **dt,
                    )
                )
            stages.append(blocks)
            inplanes = outplanes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nn.Dropout(self.drop_rate)
        init = torch_uniform(inplanes)
        self.last_linear = nn.Dense(self.num_classes, kernel_init=init, bias_init=init, **dt)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = max_pool_ceil(self.layer0(x, train))
        for block in (*self.layer1, *self.layer2, *self.layer3, *self.layer4):
            x = block(x, train)
        x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
        return self.last_linear(self.dropout(x, deterministic=not train))


def create_model(name: str, **overrides: Any) -> SENet:
    """A legacy model by timm's name, e.g. ``create_model("legacy_seresnet50", num_classes=10)``."""
    if name not in LEGACY_ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(LEGACY_ZOO)}")
    return SENet(**{**LEGACY_ZOO[name], **overrides})
