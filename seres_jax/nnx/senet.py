"""Flax NNX SENet (timm's ``legacy_*`` models): the NNX twins of ``seres_jax.senet``'s modules
(its blocks, ``_Stem``, ``SENet``) and ``create_model`` over its ``LEGACY_ZOO``.

Names, state paths, options and numerics are ``seres_jax.senet``'s (see there), its pure
helpers are shared by import, and the conventions are those of ``seres_jax.nnx.layers``. The
dropout before ``last_linear`` draws from a stream forked from ``rngs["dropout"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from .. import senet as linen
from ..layers import HE_NORMAL, Dtype, torch_uniform
from ..senet import LEGACY_ZOO, max_pool_ceil
from .layers import BatchNorm, SEModule
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
]


class _Block(nnx.Module):
    expansion: ClassVar[int] = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        project: bool = False,
        cardinality: int = 1,
        reduction: int = 16,
        downsample_kernel_size: int = 1,
        downsample_padding: int = 0,
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.inplanes, self.planes, self.stride, self.project = inplanes, planes, stride, project
        self.cardinality, self.reduction = cardinality, reduction
        self.downsample_kernel_size = downsample_kernel_size
        self.downsample_padding = downsample_padding
        self.dtype, self.param_dtype = dtype, param_dtype
        self._build(rngs)

    def _build(self, rngs: nnx.Rngs) -> None:
        """The layers (linen's ``setup``)."""
        raise NotImplementedError

    def _common(self, outplanes: int, rngs: nnx.Rngs) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        self.se_module = SEModule(
            outplanes, rd_channels=outplanes // self.reduction, kernel_init=HE_NORMAL, **dt
        )
        k, pad = self.downsample_kernel_size, self.downsample_padding
        self.downsample: nnx.List[Any] | None
        if self.project:
            conv = _conv(self.inplanes, outplanes, k, self.stride, pad, **dt)
            self.downsample = nnx.List([conv, BatchNorm(outplanes, **dt)])
        else:
            self.downsample = None

    def _se_and_add(self, y: jax.Array, x: jax.Array) -> jax.Array:
        shortcut = x
        if self.downsample is not None:
            conv, bn = self.downsample
            shortcut = bn(conv(x))
        return nnx.relu(self.se_module(y) + shortcut)


class SEResNetBlock(_Block):
    """``seres_jax.senet.SEResNetBlock``: conv3×3(stride)-BN-ReLU → conv3×3-BN-ReLU → SE →
    + shortcut → ReLU."""

    expansion = 1

    def _build(self, rngs: nnx.Rngs) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        self.conv1 = _conv(self.inplanes, self.planes, 3, self.stride, 1, **dt)
        self.bn1 = BatchNorm(self.planes, **dt)
        self.conv2 = _conv(self.planes, self.planes, 3, 1, 1, groups=self.cardinality, **dt)
        self.bn2 = BatchNorm(self.planes, **dt)
        self._common(self.planes, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        return self._se_and_add(y, x)


class Bottleneck(_Block):
    """``seres_jax.senet.Bottleneck``: 1×1-BN-ReLU → grouped 3×3-BN-ReLU → 1×1-BN → SE →
    + shortcut → ReLU; each subclass fixes the inner widths and which convolution strides."""

    expansion = 4
    stride_first: ClassVar[bool] = False

    @staticmethod
    def widths(planes: int, cardinality: int) -> tuple[int, int]:
        """Output channels of ``conv1`` and ``conv2``."""
        raise NotImplementedError

    def _build(self, rngs: nnx.Rngs) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        width1, width2 = self.widths(self.planes, self.cardinality)
        outplanes = self.planes * self.expansion
        stride1, stride2 = (self.stride, 1) if self.stride_first else (1, self.stride)
        self.conv1 = _conv(self.inplanes, width1, 1, stride1, **dt)
        self.bn1 = BatchNorm(width1, **dt)
        self.conv2 = _conv(width1, width2, 3, stride2, 1, groups=self.cardinality, **dt)
        self.bn2 = BatchNorm(width2, **dt)
        self.conv3 = _conv(width2, outplanes, 1, **dt)
        self.bn3 = BatchNorm(outplanes, **dt)
        self._common(outplanes, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        return self._se_and_add(self.bn3(self.conv3(y)), x)


# The subclasses' width rules and stride placement are the linen classes' own.
class SEBottleneck(Bottleneck):
    """``seres_jax.senet.SEBottleneck`` (SENet-154's)."""

    widths = staticmethod(linen.SEBottleneck.widths)
    stride_first = linen.SEBottleneck.stride_first


class SEResNetBottleneck(Bottleneck):
    """``seres_jax.senet.SEResNetBottleneck`` (the SE-ResNets')."""

    widths = staticmethod(linen.SEResNetBottleneck.widths)
    stride_first = linen.SEResNetBottleneck.stride_first


class SEResNeXtBottleneck(Bottleneck):
    """``seres_jax.senet.SEResNeXtBottleneck`` (the SE-ResNeXts')."""

    widths = staticmethod(linen.SEResNeXtBottleneck.widths)
    stride_first = linen.SEResNeXtBottleneck.stride_first


BLOCKS: dict[str, type[_Block]] = {
    "basic": SEResNetBlock,
    "bottleneck": SEResNetBottleneck,
    "resnext": SEResNeXtBottleneck,
    "senet": SEBottleneck,
}
"""The NNX block classes ``SENet``'s ``block`` may name (``seres_jax.senet.BLOCKS``)."""


class _Stem(nnx.Module):
    """``seres_jax.senet._Stem`` (``layer0``): ``conv1``-``bn1`` (7×7/2), or three
    conv3×3-BN-ReLU (64, 64, ``inplanes``) ``conv1``..``conv3``, ``bn1``..``bn3``."""

    def __init__(
        self,
        in_chans: int,
        inplanes: int,
        input_3x3: bool,
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.in_chans, self.inplanes, self.input_3x3 = in_chans, inplanes, input_3x3
        self.dtype, self.param_dtype = dtype, param_dtype
        dt = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if input_3x3:
            geometry = [(64, 3, 2, 1), (64, 3, 1, 1), (inplanes, 3, 1, 1)]
        else:
            geometry = [(inplanes, 7, 2, 3)]
        self.depth = len(geometry)
        cin = in_chans
        # linen's compact names: conv1, bn1, conv2, ...
        for i, (cout, k, stride, padding) in enumerate(geometry, 1):
            setattr(self, f"conv{i}", _conv(cin, cout, k, stride, padding, **dt))
            setattr(self, f"bn{i}", BatchNorm(cout, **dt))
            cin = cout

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(1, self.depth + 1):
            x = nnx.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return x


class SENet(nnx.Module):
    """``seres_jax.senet.SENet`` (timm's ``SENet``): ``layer0`` (``_Stem``),
    ``layer1``..``layer4``, ``dropout``, ``last_linear``."""

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
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.block, self.layers, self.num_classes, self.in_chans = (
            block, layers, num_classes, in_chans,
        )  # fmt: skip
        self.cardinality, self.reduction = cardinality, reduction
        self.inplanes, self.input_3x3 = inplanes, input_3x3
        self.downsample_kernel_size = downsample_kernel_size
        self.downsample_padding = downsample_padding
        self.drop_rate, self.channels = drop_rate, channels
        self.dtype, self.param_dtype = dtype, param_dtype
        dt = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        block_cls = BLOCKS[block]
        self.layer0 = _Stem(in_chans, inplanes, input_3x3, **dt)
        stages = []
        for index, (planes, repeats) in enumerate(zip(channels, layers, strict=True)):
            # layer1 does not stride, and projects (if at all) with a 1×1 convolution.
            stride = 1 if index == 0 else 2
            k, pad = (1, 0) if index == 0 else (downsample_kernel_size, downsample_padding)
            outplanes = planes * block_cls.expansion
            blocks = []
            for i in range(repeats):
                blocks.append(
                    block_cls(
                        inplanes if i == 0 else outplanes,
                        planes,
                        stride if i == 0 else 1,
                        project=i == 0 and (stride != 1 or inplanes != outplanes),
                        cardinality=cardinality,
                        reduction=reduction,
                        downsample_kernel_size=k,
                        downsample_padding=pad,
                        **dt,
                    )
                )
            stages.append(nnx.List(blocks))
            inplanes = outplanes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nnx.Dropout(drop_rate, rngs=rngs if drop_rate > 0.0 else None)
        init = torch_uniform(inplanes)
        self.last_linear = nnx.Linear(inplanes, num_classes, kernel_init=init, bias_init=init, **dt)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = max_pool_ceil(self.layer0(x))
        for block in (*self.layer1, *self.layer2, *self.layer3, *self.layer4):
            x = block(x)
        x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
        return self.last_linear(self.dropout(x))


def create_model(name: str, *, rngs: nnx.Rngs, **overrides: Any) -> SENet:
    """A legacy model by timm's name, e.g. ``create_model("legacy_seresnet50", rngs=...)``."""
    if name not in LEGACY_ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(LEGACY_ZOO)}")
    return SENet(**{**LEGACY_ZOO[name], **overrides}, rngs=rngs)
