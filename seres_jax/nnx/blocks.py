"""Flax NNX SE residual blocks and ``make_stage``: the NNX twins of ``seres_jax.blocks``
(names, state paths and numerics as there; conventions in ``seres_jax.nnx.layers``)."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from .. import blocks as linen_blocks
from ..blocks import _needs_projection
from ..layers import Dtype
from .layers import BatchNorm, ConvBNAct, SEBlock, conv2d, create_attn


class _SEResBlock(nnx.Module):
    """The constructor arguments both block styles share (``seres_torch``'s, plus dtypes),
    stored by the subclasses' constructors, which then build the layers."""

    se: nnx.Module | None

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        reduction: int,
        attn: str | None,
        dtype: Dtype,
        param_dtype: Dtype,
    ) -> None:
        self.cin, self.cout, self.stride = cin, cout, stride
        self.reduction, self.attn = reduction, attn
        self.dtype, self.param_dtype = dtype, param_dtype

    def _attention_module(self, rngs: nnx.Rngs) -> nnx.Module | None:
        return create_attn(
            self.attn, self.cout, se_layer=partial(SEBlock, reduction=self.reduction),
            dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs,
        )  # fmt: skip

    def attention(self, x: jax.Array) -> jax.Array:
        return x if self.se is None else self.se(x)


class SEResBlockPostAct(_SEResBlock):
    """``seres_jax.blocks.SEResBlockPostAct``: ``conv1``, ``conv2`` = [conv, BN], ``se``,
    ``proj`` = [1×1 conv, BN] when the stride or channel count changes."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        reduction: int = 16,
        attn: str | None = "se",
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(cin, cout, stride, reduction, attn, dtype, param_dtype)
        dt = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = ConvBNAct(cin, cout, k=3, s=stride, p=1, act="silu", **dt)
        self.conv2 = nnx.List([conv2d(cout, cout, 3, padding=1, **dt), BatchNorm(cout, **dt)])
        self.se = self._attention_module(rngs)
        self.proj: nnx.List[Any] | None = (
            nnx.List([conv2d(cin, cout, 1, stride=stride, **dt), BatchNorm(cout, **dt)])
            if _needs_projection(cin, cout, stride)
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.proj is None:
            skip = x
        else:
            conv, bn = self.proj
            skip = bn(conv(x))
        y = self.conv1(x)
        conv, bn = self.conv2
        y = self.attention(bn(conv(y)))
        return nnx.silu(y + skip)


class SEResBlockPreAct(_SEResBlock):
    """``seres_jax.blocks.SEResBlockPreAct``: ``bn1``, ``conv1``, ``bn2``, ``conv2``, ``se``
    and ``proj`` (a bare 1×1 conv on the raw input) when projecting."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        reduction: int = 16,
        attn: str | None = "se",
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(cin, cout, stride, reduction, attn, dtype, param_dtype)
        dt = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn1 = BatchNorm(cin, **dt)
        self.conv1 = conv2d(cin, cout, 3, stride=stride, padding=1, **dt)
        self.bn2 = BatchNorm(cout, **dt)
        self.conv2 = conv2d(cout, cout, 3, padding=1, **dt)
        self.se = self._attention_module(rngs)
        self.proj: nnx.Conv | None = (
            conv2d(cin, cout, 1, stride=stride, **dt)
            if _needs_projection(cin, cout, stride)
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        skip = x if self.proj is None else self.proj(x)
        y = self.conv1(nnx.silu(self.bn1(x)))
        y = self.conv2(nnx.silu(self.bn2(y)))
        return self.attention(y) + skip


def make_stage(
    block_cls: type[_SEResBlock],
    cin: int,
    cout: int,
    n_blocks: int,
    first_stride: int,
    reduction: int,
    **block_kwargs: Any,
) -> nnx.List[_SEResBlock]:
    """``seres_jax.blocks.make_stage``'s rule building NNX blocks (``block_kwargs`` take
    ``rngs``), as an ``nnx.List``: assigned to ``self.stage1`` its blocks are ``stage1_0``,
    ``stage1_1``, ... under the path rule."""
    layers = linen_blocks.make_stage(
        block_cls, cin, cout, n_blocks, first_stride, reduction, **block_kwargs
    )
    return nnx.List(layers)
