"""Flax SE residual blocks and ``make_stage``, mirroring ``seres_torch.blocks`` name for name.

Inputs are NHWC. Each block takes ``__call__(x, train=False)``; ``train=True`` normalises with
batch statistics and updates the ``batch_stats`` collection as PyTorch's train mode does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import BatchNorm, ConvBNAct, Dtype, SEBlock, conv2d, create_attn


def _needs_projection(cin: int, cout: int, stride: int) -> bool:
    return stride != 1 or cin != cout


class _SEResBlock(nn.Module):
    """The constructor arguments both block styles share (``seres_torch``'s, plus dtypes)."""

    cin: int
    cout: int
    stride: int = 1
    reduction: int = 16
    attn: str | None = "se"
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def attention(self, x: jax.Array) -> jax.Array:
        return x if self.se is None else self.se(x)


class SEResBlockPostAct(_SEResBlock):
    """``conv-BN-SiLU → conv-BN → SE → + skip → SiLU``; params ``conv1``, ``conv2_{0,1}``,
    ``se``, and ``proj_{0,1}`` when the stride or channel count changes."""

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.conv1 = ConvBNAct(self.cin, self.cout, k=3, s=self.stride, p=1, act="silu", **dt)
        self.conv2 = [conv2d(self.cout, self.cout, 3, padding=1, **dt), BatchNorm(**dt)]
        self.se = create_attn(
            self.attn, self.cout, se_layer=partial(SEBlock, reduction=self.reduction), **dt
        )
        if _needs_projection(self.cin, self.cout, self.stride):
            self.proj: list[nn.Module] | None = [
                conv2d(self.cin, self.cout, 1, stride=self.stride, **dt),
                BatchNorm(**dt),
            ]
        else:
            self.proj = None

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.proj is None:
            skip = x
        else:
            conv, bn = self.proj
            skip = bn(conv(x), train)
        y = self.conv1(x, train)
        conv, bn = self.conv2
        y = self.attention(bn(conv(y), train))
        return nn.silu(y + skip)


class SEResBlockPreAct(_SEResBlock):
    """``BN-SiLU → conv → BN-SiLU → conv → SE → + skip``; params ``bn1``, ``conv1``, ``bn2``,
    ``conv2``, ``se`` and ``proj`` (a bare 1×1 conv on the raw input) when projecting."""

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.bn1 = BatchNorm(**dt)
        self.conv1 = conv2d(self.cin, self.cout, 3, stride=self.stride, padding=1, **dt)
        self.bn2 = BatchNorm(**dt)
        self.conv2 = conv2d(self.cout, self.cout, 3, padding=1, **dt)
        self.se = create_attn(
            self.attn, self.cout, se_layer=partial(SEBlock, reduction=self.reduction), **dt
        )
        if _needs_projection(self.cin, self.cout, self.stride):
            self.proj: nn.Module | None = conv2d(self.cin, self.cout, 1, stride=self.stride, **dt)
        else:
            self.proj = None

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        skip = x if self.proj is None else self.proj(x)
        y = self.conv1(nn.silu(self.bn1(x, train)))
        y = self.conv2(nn.silu(self.bn2(y, train)))
        return self.attention(y) + skip


def make_stage(
    block_cls: Callable[..., Any],
    cin: int,
    cout: int,
    n_blocks: int,
    first_stride: int,
    reduction: int,
    **block_kwargs: Any,
) -> list[Any]:
    """``n_blocks`` blocks; the first changes channels/stride, the rest keep ``cout`` at stride 1.

    Returns a list: call it from ``setup`` and assign it to an attribute (``self.stage1 = ...``)
    so the blocks are named ``stage1_0``, ``stage1_1``, ... like PyTorch's ``stage1.0``.
    ``block_cls`` is any block class of either Flax API (``seres_jax.nnx.blocks`` builds its
    stages with this rule).
    """
    layers = [block_cls(cin, cout, stride=first_stride, reduction=reduction, **block_kwargs)]
    layers += [
        block_cls(cout, cout, stride=1, reduction=reduction, **block_kwargs)
        for _ in range(1, n_blocks)
    ]
    return layers
