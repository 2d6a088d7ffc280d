"""Flax SE-ResNet models, mirroring ``seres_torch.models``: the notebook's ``SEResNetTiny``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .blocks import SEResBlockPostAct, SEResBlockPreAct, make_stage
from .layers import BatchNorm, Dtype, conv2d, global_avg_pool, torch_uniform


class SEResNetTiny(nn.Module):
    """Stem → three stages (``base``, ``2·base``, ``4·base``; strides 1, 2, 2) → head → fc.

    Params: ``stem_{0,1}``, ``stage{1,2,3}_{i}``, ``head_0`` (BatchNorm), ``fc`` (Dense).
    Takes NHWC images, returns logits in the compute dtype.
    """

    in_ch: int = 3
    num_classes: int = 10
    base: int = 32
    n: int = 2
    reduction: int = 16
    preact: bool = False
    attn: str | None = "se"
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.stem: list[Callable[..., Any]] = [
            conv2d(self.in_ch, self.base, 3, padding=1, **dt),
            BatchNorm(**dt),
            nn.silu,
        ]
        block = SEResBlockPreAct if self.preact else SEResBlockPostAct
        ch1, ch2, ch3 = self.base, self.base * 2, self.base * 4
        stage = dict(n_blocks=self.n, reduction=self.reduction, attn=self.attn, **dt)
        self.stage1 = make_stage(block, ch1, ch1, first_stride=1, **stage)
        self.stage2 = make_stage(block, ch1, ch2, first_stride=2, **stage)
        self.stage3 = make_stage(block, ch2, ch3, first_stride=2, **stage)
        self.head: list[Callable[..., Any]] = [BatchNorm(**dt), nn.silu, global_avg_pool]
        init = torch_uniform(ch3)
        self.fc = nn.Dense(self.num_classes, kernel_init=init, bias_init=init, **dt)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_ch:
            raise ValueError(
                f"SEResNetTiny expects NHWC input with {self.in_ch} channels, got shape {x.shape}"
            )
        conv, bn, act = self.stem
        x = act(bn(conv(x), train))
        for block in (*self.stage1, *self.stage2, *self.stage3):
            x = block(x, train)
        bn, act, pool = self.head
        x = pool(act(bn(x, train)))
        return self.fc(x.reshape(x.shape[0], -1))
