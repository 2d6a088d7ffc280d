"""Flax NNX SE / ECA ResNets, ResNeXts and SENet-154: the NNX twins of ``seres_jax.resnet``'s
modules (``BasicBlock``, ``Bottleneck``, ``SEResNet``) and ``create_model`` over its ``ZOO``.

Names, state paths, options and numerics are ``seres_jax.resnet``'s (timm's layout; see
there), its pure helpers are shared by import, and the conventions are those of
``seres_jax.nnx.layers``. Stochastic depth (``drop_path_layer``) and the head's
``nnx.Dropout`` draw from streams forked from ``rngs["dropout"]`` at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import HE_NORMAL, Dtype, torch_uniform
from ..resnet import (
    ZOO,
    _block_widths,
    _identity,
    _stem_widths,
    anti_alias,
    attention_kwargs,
    avg_pool_ceil,
    drop_path_rates,
    max_pool_stem,
)
from .layers import BatchNorm, DropPath, conv2d, create_attn

__all__ = ["BLOCKS", "ZOO", "BasicBlock", "Bottleneck", "SEResNet", "create_model"]

# timm's convolutions: PyTorch's geometry, He-normal over fan-out.
_conv = partial(conv2d, kernel_init=HE_NORMAL)


def _attention(attn: str | None, channels: int, unpruned: int, **kwargs: Any) -> nnx.Module | None:
    return create_attn(attn, channels, **attention_kwargs(attn, unpruned), **kwargs)


class _Block(nnx.Module):
    expansion: ClassVar[int] = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        project: bool = False,
        cardinality: int = 1,
        base_width: int = 64,
        attn: str | None = "se",
        reduce_first: int = 1,
        aa_layer: str | None = None,
        widths: Sequence[int] | None = None,
        avg_down: bool = False,
        down_kernel_size: int = 1,
        zero_init_last: bool = True,
        drop_path: float = 0.0,  # the branch's stochastic-depth rate
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.inplanes, self.planes, self.stride, self.project = inplanes, planes, stride, project
        self.cardinality, self.base_width, self.attn = cardinality, base_width, attn
        self.reduce_first, self.aa_layer, self.widths = reduce_first, aa_layer, widths
        self.avg_down, self.down_kernel_size = avg_down, down_kernel_size
        self.zero_init_last, self.drop_path = zero_init_last, drop_path
        self.dtype, self.param_dtype = dtype, param_dtype
        self._build(rngs)

    def _build(self, rngs: nnx.Rngs) -> None:
        """The layers (linen's ``setup``)."""
        raise NotImplementedError

    def _common(self, outplanes: int, rngs: nnx.Rngs) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        self.se = _attention(self.attn, outplanes, self.planes * self.expansion, **dt)
        # As timm (and seres_torch's ``drop_path`` attribute): no module at rate 0.
        self.drop_path_layer = DropPath(self.drop_path, rngs=rngs) if self.drop_path > 0.0 else None
        self.aa = anti_alias(self.aa_layer, self.stride)
        self.downsample: nnx.List[Any] | None
        if not self.project:
            self.downsample = None
        elif self.avg_down:
            pool = avg_pool_ceil if self.stride != 1 else _identity
            conv = _conv(self.inplanes, outplanes, 1, **dt)
            self.downsample = nnx.List([pool, conv, BatchNorm(outplanes, **dt)])
        else:
            k = self.down_kernel_size if self.stride != 1 else 1
            pad = (self.stride - 1 + k - 1) // 2
            conv = _conv(self.inplanes, outplanes, k, self.stride, pad, **dt)
            self.downsample = nnx.List([conv, BatchNorm(outplanes, **dt)])

    def _conv_stride(self) -> int:
        return 1 if self.aa_layer is not None else self.stride  # the pool strides instead

    def _finish(self, y: jax.Array, x: jax.Array) -> jax.Array:
        if self.se is not None:
            y = self.se(y)
        if self.drop_path_layer is not None:
            y = self.drop_path_layer(y)
        shortcut = x
        for layer in self.downsample or ():
            shortcut = layer(shortcut)
        return nnx.relu(y + shortcut)

    def _last_bn(self, features: int, rngs: nnx.Rngs) -> BatchNorm:
        init = nnx.initializers.zeros if self.zero_init_last else nnx.initializers.ones
        return BatchNorm(
            features, scale_init=init, dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs
        )


class BasicBlock(_Block):
    """``seres_jax.resnet.BasicBlock``: ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``se``,
    ``drop_path_layer``, ``downsample``."""

    expansion = 1

    def _build(self, rngs: nnx.Rngs) -> None:
        if self.cardinality != 1 or self.base_width != 64:
            raise ValueError("BasicBlock supports only cardinality 1 and base_width 64")
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        first, out = self.widths or (self.planes // self.reduce_first, self.planes)
        self.conv1 = _conv(self.inplanes, first, 3, self._conv_stride(), 1, **dt)
        self.bn1 = BatchNorm(first, **dt)
        self.conv2 = _conv(first, out, 3, padding=1, **dt)
        self.bn2 = self._last_bn(out, rngs)
        self._common(out, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.aa(nnx.relu(self.bn1(self.conv1(x))))
        return self._finish(self.bn2(self.conv2(y)), x)


class Bottleneck(_Block):
    """``seres_jax.resnet.Bottleneck``: ``conv1``-``bn1``, grouped ``conv2``-``bn2``,
    ``conv3``-``bn3``, ``se``, ``drop_path_layer``, ``downsample``."""

    expansion = 4

    def _build(self, rngs: nnx.Rngs) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        width = int(self.planes * (self.base_width / 64)) * self.cardinality
        outplanes = self.planes * self.expansion
        first, width, outplanes = self.widths or (width // self.reduce_first, width, outplanes)
        self.conv1 = _conv(self.inplanes, first, 1, **dt)
        self.bn1 = BatchNorm(first, **dt)
        stride = self._conv_stride()
        self.conv2 = _conv(first, width, 3, stride, 1, groups=self.cardinality, **dt)
        self.bn2 = BatchNorm(width, **dt)
        self.conv3 = _conv(width, outplanes, 1, **dt)
        self.bn3 = self._last_bn(outplanes, rngs)
        self._common(outplanes, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.aa(nnx.relu(self.bn2(self.conv2(y))))
        return self._finish(self.bn3(self.conv3(y)), x)


BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
"""The NNX block classes ``SEResNet``'s ``block`` may name (``seres_jax.resnet.BLOCKS``)."""


class SEResNet(nnx.Module):
    """``seres_jax.resnet.SEResNet`` (timm's ``ResNet`` with SE or ECA blocks): ``conv1`` (a
    list for the deep stems), ``bn1``, ``layer1``..``layer4``, ``dropout``, ``fc``."""

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
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.block, self.layers, self.num_classes, self.in_chans = (
            block, layers, num_classes, in_chans,
        )  # fmt: skip
        self.cardinality, self.base_width = cardinality, base_width
        self.stem_width, self.stem_type = stem_width, stem_type
        self.block_reduce_first, self.down_kernel_size = block_reduce_first, down_kernel_size
        self.avg_down, self.aa_layer, self.attn = avg_down, aa_layer, attn
        self.channels, self.block_widths = channels, block_widths
        self.zero_init_last, self.drop_rate, self.drop_path_rate = (
            zero_init_last, drop_rate, drop_path_rate,
        )  # fmt: skip
        self.dtype, self.param_dtype = dtype, param_dtype
        dt = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        block_cls = BLOCKS[block]
        stem = _stem_widths(stem_type, stem_width)
        inplanes = stem[2] if stem_type else 64  # as timm: no stem_width for the 7×7
        self.conv1: nnx.List[Any] | nnx.Conv
        if stem_type:
            self.conv1 = nnx.List([
                _conv(in_chans, stem[0], 3, 2, 1, **dt), BatchNorm(stem[0], **dt), nnx.relu,
                _conv(stem[0], stem[1], 3, padding=1, **dt), BatchNorm(stem[1], **dt), nnx.relu,
                _conv(stem[1], inplanes, 3, padding=1, **dt),
            ])  # fmt: skip
        else:
            self.conv1 = _conv(in_chans, inplanes, 7, 2, 3, **dt)
        self.bn1 = BatchNorm(inplanes, **dt)
        # With anti-aliasing timm replaces the max-pool by the 2×2/2 average pool.
        self.maxpool = anti_alias(aa_layer) if aa_layer else max_pool_stem
        widths = iter(_block_widths(block_widths, layers))
        rates = iter(drop_path_rates(drop_path_rate, layers))
        stages = []
        for index, (planes, repeats) in enumerate(zip(channels, layers, strict=True)):
            stride = 1 if index == 0 else 2
            outplanes = planes * block_cls.expansion
            # As seres_jax.resnet: the projection is decided on the unpruned widths.
            project = stride != 1 or inplanes != outplanes
            blocks = []
            for i in range(repeats):
                block_width = next(widths)
                blocks.append(
                    block_cls(
                        inplanes,
                        planes,
                        stride if i == 0 else 1,
                        project=i == 0 and project,
                        cardinality=cardinality,
                        base_width=base_width,
                        attn=attn,
                        reduce_first=block_reduce_first,
                        aa_layer=aa_layer,
                        widths=block_width,
                        avg_down=avg_down,
                        down_kernel_size=down_kernel_size,
                        zero_init_last=zero_init_last,
                        drop_path=next(rates),
                        **dt,
                    )
                )
                inplanes = block_width[-1] if block_width else outplanes
            stages.append(nnx.List(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # The identity at rate 0: no random stream then.
        self.dropout = nnx.Dropout(drop_rate, rngs=rngs if drop_rate > 0.0 else None)
        init = torch_uniform(inplanes)
        self.fc = nnx.Linear(inplanes, num_classes, kernel_init=init, bias_init=init, **dt)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.conv1 if isinstance(self.conv1, nnx.List) else (self.conv1,):
            x = layer(x)
        x = self.maxpool(nnx.relu(self.bn1(x)))
        for block in (*self.layer1, *self.layer2, *self.layer3, *self.layer4):
            x = block(x)
        x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
        return self.fc(self.dropout(x))


def create_model(name: str, *, rngs: nnx.Rngs, **overrides: Any) -> SEResNet:
    """A zoo model by timm's name, e.g. ``create_model("seresnet50", rngs=nnx.Rngs(0))``."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return SEResNet(**{**ZOO[name], **overrides}, rngs=rngs)
