"""Flax NNX ``SEResNetTiny``: the NNX twin of ``seres_jax.models`` (names, state paths and
numerics as there; conventions in ``seres_jax.nnx.layers``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import Dtype, global_avg_pool, torch_uniform
from .blocks import SEResBlockPostAct, SEResBlockPreAct, make_stage
from .layers import BatchNorm, conv2d


class SEResNetTiny(nnx.Module):
    """``seres_jax.models.SEResNetTiny``: ``stem`` = [conv, BN, SiLU], ``stage{1,2,3}``,
    ``head`` = [BN, SiLU, pool], ``fc`` (``nnx.Linear``). Takes NHWC images, returns logits in
    the compute dtype."""

    def __init__(
        self,
        in_ch: int = 3,
        num_classes: int = 10,
        base: int = 32,
        n: int = 2,
        reduction: int = 16,
        preact: bool = False,
        attn: str | None = "se",
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.in_ch, self.num_classes, self.base, self.n = in_ch, num_classes, base, n
        self.reduction, self.preact, self.attn = reduction, preact, attn
        self.dtype, self.param_dtype = dtype, param_dtype
        dt = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem: nnx.List[Any] = nnx.List(
            [conv2d(in_ch, base, 3, padding=1, **dt), BatchNorm(base, **dt), nnx.silu]
        )
        block = SEResBlockPreAct if preact else SEResBlockPostAct
        ch1, ch2, ch3 = base, base * 2, base * 4
        stage = dict(n_blocks=n, reduction=reduction, attn=attn, **dt)
        self.stage1 = make_stage(block, ch1, ch1, first_stride=1, **stage)
        self.stage2 = make_stage(block, ch1, ch2, first_stride=2, **stage)
        self.stage3 = make_stage(block, ch2, ch3, first_stride=2, **stage)
        self.head: nnx.List[Any] = nnx.List([BatchNorm(ch3, **dt), nnx.silu, global_avg_pool])
        init = torch_uniform(ch3)
        self.fc = nnx.Linear(ch3, num_classes, kernel_init=init, bias_init=init, **dt)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_ch:
            raise ValueError(
                f"SEResNetTiny expects NHWC input with {self.in_ch} channels, got shape {x.shape}"
            )
        conv, bn, act = self.stem
        x = act(bn(conv(x)))
        for block in (*self.stage1, *self.stage2, *self.stage3):
            x = block(x)
        bn, act, pool = self.head
        x = pool(act(bn(x)))
        return self.fc(x.reshape(x.shape[0], -1))
