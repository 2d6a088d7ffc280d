"""Flax NNX layers: the NNX twins of the modules of ``seres_jax.layers`` (``conv2d``,
``BatchNorm``, the channel attentions built by ``create_attn``, ``ConvBNAct``, ``DropPath``)
and ``count_params``.

The conventions are ``seres_jax.layers``' (layout, padding, names, initialisation, precision),
and so are the numerics: the functions there (``batch_norm``, ``drop_path``, ``check_groups``,
``torch_uniform``, ...) compute what both APIs compute; only the modules are new here. A
module's state paths are its linen twin's variable paths, an index ``i`` after ``X`` reading
``X_i`` (``nnx.List`` members, activations included, sit at the linen list's indices);
``nnx.Param`` is linen's ``params``, ``nnx.BatchStat`` its ``batch_stats``. Modes are NNX's:
``BatchNorm.use_running_average`` and ``DropPath.deterministic``, flipped by
``model.train()`` / ``model.eval()`` (or ``nnx.view``); modules are created in train mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import (
    ATTENTIONS,
    Dtype,
    Initializer,
    batch_norm,
    check_groups,
    drop_path,
    eca_kernel_size,
    global_avg_pool,
    make_activation,
    make_divisible,
    torch_uniform,
)

__all__ = [
    "ATTENTION_LAYERS",
    "BatchNorm",
    "ConvBNAct",
    "DropPath",
    "ECABlock",
    "SEBlock",
    "SEModule",
    "conv2d",
    "count_params",
    "create_attn",
]


def conv2d(
    cin: int,
    cout: int,
    k: int,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = False,
    groups: int = 1,
    *,
    kernel_init: Initializer | None = None,
    dtype: Dtype = None,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """``seres_jax.layers.conv2d`` as an ``nnx.Conv``: ``torch.nn.Conv2d``'s geometry and
    initialisation (unless ``kernel_init``), widths checked as there."""
    check_groups(cin, cout, groups)
    init = torch_uniform(cin // groups * k * k)
    return nnx.Conv(
        cin,
        cout,
        (k, k),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kernel_init or init,
        bias_init=init,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class BatchNorm(nnx.Module):
    """``seres_jax.layers.BatchNorm`` (PyTorch's ``BatchNorm2d``) over ``num_features``
    channels: params ``scale``, ``bias``; batch stats ``mean``, ``var``,
    ``num_batches_tracked``. Unless ``use_running_average``, a call normalises with the batch's
    statistics and updates the running ones (PyTorch's momentum, unbiased variance) and the
    count; a jitted train step must carry the ``nnx.BatchStat`` state out (``nnx.jit`` does)."""

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.1,
        epsilon: float = 1e-5,
        scale_init: Initializer = nnx.initializers.ones,
        *,
        use_running_average: bool = False,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.num_features = num_features
        self.momentum = momentum
        self.epsilon = epsilon
        self.use_running_average = use_running_average
        self.dtype = dtype
        self.param_dtype = param_dtype
        shape = (num_features,)
        self.scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype))
        # Stored in param_dtype, as PyTorch's buffers follow the module's dtype.
        self.mean = nnx.BatchStat(jnp.zeros(shape, param_dtype))
        self.var = nnx.BatchStat(jnp.ones(shape, param_dtype))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or jnp.result_type(x, self.param_dtype)
        y, updated = batch_norm(
            x, self.scale[...], self.bias[...], self.mean[...], self.var[...],
            train=not self.use_running_average, momentum=self.momentum, epsilon=self.epsilon,
            dtype=dtype,
        )  # fmt: skip
        if updated is not None:
            self.mean[...] = updated[0].astype(self.param_dtype)
            self.var[...] = updated[1].astype(self.param_dtype)
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        return y

    def set_view(self, use_running_average: bool | None = None) -> None:
        """``nnx.view``'s hook: ``use_running_average`` as given (``None``: unchanged)."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class SEBlock(nnx.Module):
    """``seres_jax.layers.SEBlock``: ``fc`` = [1×1 conv, SiLU, 1×1 conv, sigmoid]."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        min_hidden: int = 4,
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.channels = channels
        self.reduction = reduction
        self.min_hidden = min_hidden
        hidden = max(min_hidden, channels // reduction)
        conv = dict(k=1, use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc: nnx.List[Callable[[jax.Array], jax.Array]] = nnx.List(
            [
                conv2d(channels, hidden, **conv),
                make_activation("silu"),
                conv2d(hidden, channels, **conv),
                nnx.sigmoid,
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        w = global_avg_pool(x)
        for layer in self.fc:
            w = layer(w)
        return x * w.astype(x.dtype)


class SEModule(nnx.Module):
    """``seres_jax.layers.SEModule`` (timm's): 1×1 convolutions ``fc1``, ``fc2`` with bias;
    ``kernel_init`` as there."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_divisor: int = 8,
        rd_channels: int | None = None,
        kernel_init: Initializer | None = None,
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.channels = channels
        self.rd_ratio = rd_ratio
        self.rd_divisor = rd_divisor
        self.rd_channels = rd_channels
        hidden = make_divisible(channels * rd_ratio, rd_divisor)
        if rd_channels is not None:
            hidden = rd_channels
        conv = dict(
            k=1, use_bias=True, kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs,
        )  # fmt: skip
        self.fc1 = conv2d(channels, hidden, **conv)
        self.fc2 = conv2d(hidden, channels, **conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.fc2(nnx.relu(self.fc1(global_avg_pool(x))))
        return x * nnx.sigmoid(w).astype(x.dtype)


class ConvBNAct(nnx.Module):
    """``seres_jax.layers.ConvBNAct``: ``conv`` (no bias) → ``bn`` → activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int = 3,
        s: int = 1,
        p: int = 1,
        act: str = "silu",
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.cin, self.cout, self.k, self.s, self.p, self.act = cin, cout, k, s, p, act
        dt = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv = conv2d(cin, cout, k, s, p, **dt)
        self.bn = BatchNorm(cout, **dt)
        self.activation = make_activation(act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(self.bn(self.conv(x)))


def count_params(module: nnx.Module) -> int:
    """Trainable parameters (the ``nnx.Param`` state, abstract or not), counted as
    ``seres_jax.layers.count_params`` counts the linen twin's."""
    params = nnx.state(module, nnx.Param)
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


class ECABlock(nnx.Module):
    """``seres_jax.layers.ECABlock``: ``conv``, a bias-free 1-D convolution across channels
    whose kernel is ``(k, 1, 1)``."""

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: int = 2,
        beta: int = 1,
        *,
        dtype: Dtype = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.channels = channels
        self.kernel_size = kernel_size
        self.gamma = gamma
        self.beta = beta
        k = kernel_size or eca_kernel_size(channels, gamma, beta)
        init = torch_uniform(k)
        self.conv = nnx.Conv(
            1, 1, (k,), padding=(((k - 1) // 2, (k - 1) // 2),), use_bias=False,
            kernel_init=init, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        # The channels become a length-C sequence with one feature, as in PyTorch's view.
        w = self.conv(global_avg_pool(x).reshape(x.shape[0], self.channels, 1))
        return x * nnx.sigmoid(w).reshape(x.shape[0], 1, 1, self.channels).astype(x.dtype)


ATTENTION_LAYERS: dict[str, type[nnx.Module]] = {"se": SEModule, "eca": ECABlock}
"""The vocabulary of ``seres_jax.layers.ATTENTION_LAYERS``, as NNX modules."""


def create_attn(
    attn: str | None,
    channels: int,
    *,
    se_layer: Callable[..., nnx.Module] = SEModule,
    rngs: nnx.Rngs,
    **kwargs: Any,
) -> nnx.Module | None:
    """``seres_jax.layers.create_attn`` building NNX modules: the channel attention named
    ``attn`` over ``channels`` (``None``/``"none"``: none); ``kwargs`` go to its constructor."""
    if attn in (None, "none"):
        return None
    if attn not in ATTENTION_LAYERS:
        raise ValueError(f"unknown attention {attn!r}; expected one of {ATTENTIONS} or None")
    layer: Callable[..., nnx.Module] = se_layer if attn == "se" else ATTENTION_LAYERS[attn]
    return layer(channels, rngs=rngs, **kwargs)


class DropPath(nnx.Module):
    """``seres_jax.layers.DropPath`` (stochastic depth): unless ``deterministic``, each
    sample's ``x`` is zeroed with probability ``drop_prob`` (kept ones scaled by
    ``1 / (1 - drop_prob)`` with ``scale_by_keep``), one Bernoulli draw per sample from this
    module's own stream, forked from ``rngs["dropout"]`` as ``nnx.Dropout`` holds its own;
    each call advances it. The identity at rate 0 (no RNG state then) or when deterministic."""

    def __init__(
        self,
        drop_prob: float = 0.0,
        scale_by_keep: bool = True,
        *,
        deterministic: bool = False,
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep
        self.deterministic = deterministic
        stream = rngs["dropout"] if isinstance(rngs, nnx.Rngs) else rngs
        self.rngs: nnx.RngStream | None = nnx.data(
            stream.fork() if stream is not None and drop_prob > 0.0 else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.drop_prob == 0.0 or self.deterministic:
            return x
        if self.rngs is None:
            raise ValueError(
                f"DropPath({self.drop_prob}) in train mode needs a random stream: build it "
                "with rngs=nnx.Rngs(...) or set deterministic=True (model.eval())"
            )
        return drop_path(x, self.rngs(), self.drop_prob, self.scale_by_keep)

    def set_view(self, deterministic: bool | None = None) -> None:
        """``nnx.view``'s hook: ``deterministic`` as given (``None``: unchanged)."""
        if deterministic is not None:
            self.deterministic = deterministic
