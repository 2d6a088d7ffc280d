"""Flax layers mirroring ``seres_torch.layers``, and the conventions all of seres_jax follows.

The one vocabulary of both families: ``conv2d`` (every 2-D convolution), ``BatchNorm``, the
channel attentions (``SEBlock``, ``SEModule``, ``ECABlock``, built by name with ``create_attn``),
``ConvBNAct`` and stochastic depth (``DropPath``). A new channel attention is one class here,
its PyTorch twin in ``seres_torch.layers`` and one entry in each ``ATTENTION_LAYERS``.

Conventions (documented here, once):

* **Layout.** Activations are NHWC; conv kernels are HWIO (PyTorch: NCHW activations, OIHW
  kernels). ``seres_jax.convert`` owns the kernel transposition.
* **Padding.** Convolutions take explicit symmetric padding ``((p, p), (p, p))``, exactly like
  PyTorch's ``padding=p``. ``"SAME"`` is never used: for a stride-2 convolution on an even input
  it pads ``(0, 1)`` instead of ``(1, 1)`` and shifts every output pixel.
* **Names.** A submodule's Flax name is the PyTorch attribute name; a member ``i`` of a PyTorch
  ``nn.Sequential`` (or list) ``seq`` is the Flax name ``seq_i``. Modules hold such members in a
  list assigned in ``setup`` (Flax names list members ``attr_i``), activations included, so the
  indices line up with PyTorch's (``fc_0``, ``fc_2``).
* **Initialisation.** PyTorch's defaults, so a run started in JAX is the run PyTorch would start:
  conv/linear weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (kaiming-uniform with
  ``a=sqrt(5)``), BatchNorm scale 1, bias 0, running mean 0, running variance 1.
* **Precision.** ``dtype`` is the compute dtype (``None``: from the inputs) and ``param_dtype``
  the storage dtype of parameters and running statistics; BatchNorm computes its statistics
  and normalises in float32 whatever the compute dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
"""A ``dtype`` or ``param_dtype`` argument: a JAX or NumPy dtype (``jnp.bfloat16``), or
``None`` for a compute dtype taken from the inputs."""
Initializer = Callable[..., jax.Array]
"""A Flax initialiser: ``init(key, shape, dtype) -> jax.Array``."""
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"silu": nn.silu, "relu": nn.relu}
"""The activations a model's ``act`` may name (``make_activation``), as in
``seres_torch.layers.ACTIVATIONS``."""


def make_activation(act: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function named ``act`` (``"silu"`` or ``"relu"``)."""
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ValueError(
            f"unknown activation {act!r}; expected one of {tuple(ACTIVATIONS)}"
        ) from None


def torch_uniform(fan_in: int) -> Initializer:
    """PyTorch's default weight *and* bias initialiser for conv and linear layers."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


HE_NORMAL: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
"""timm's convolution init (``kaiming_normal_(mode="fan_out", nonlinearity="relu")``), which
its models apply to every ``Conv2d`` after building them; biases keep PyTorch's default."""


def check_groups(cin: int, cout: int, groups: int) -> None:
    """Refuse a convolution whose widths are not positive multiples of ``groups``, naming them
    (``conv2d``'s check, shared with ``seres_jax.nnx.layers.conv2d``)."""
    if min(cin, cout) < groups or cin % groups or cout % groups:
        raise ValueError(
            "widths must be positive multiples of the groups: a convolution of "
            f"{cin} -> {cout} channels in {groups} group(s)"
        )


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
    name: str | None = None,
) -> nn.Conv:
    """An ``nn.Conv`` configured as ``torch.nn.Conv2d(cin, cout, k, stride, padding, bias,
    groups=groups)``, initialised as PyTorch does unless ``kernel_init`` is given. Widths that
    are not positive multiples of ``groups`` (a small ``channels`` under grouped convolutions or
    the SE squeeze) are refused here, with the numbers, not deep inside ``init``."""
    check_groups(cin, cout, groups)
    init = torch_uniform(cin // groups * k * k)
    return nn.Conv(
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
        name=name,
    )


def global_avg_pool(x: jax.Array) -> jax.Array:
    """``AdaptiveAvgPool2d(1)`` on NHWC, keeping the spatial dims; accumulates in float32."""
    return jnp.mean(x, axis=(1, 2), keepdims=True, dtype=jnp.float32).astype(x.dtype)


def batch_norm(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    running_mean: jax.Array,
    running_var: jax.Array,
    *,
    train: bool,
    momentum: float,
    epsilon: float,
    dtype: Dtype,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """``BatchNorm``'s numerics on arrays (shared with ``seres_jax.nnx.layers.BatchNorm``):
    the output in ``dtype`` and, in train mode, the updated running mean and variance in float32
    (``None`` in eval mode); the caller stores them and counts the batch."""
    if train:
        reduce_axes = tuple(range(x.ndim - 1))
        n = math.prod(x.shape[:-1])
        if n < 2:
            # PyTorch raises here too: the unbiased variance of one value is undefined.
            raise ValueError(
                f"BatchNorm in train mode needs more than 1 value per channel, got input "
                f"shape {x.shape}"
            )
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=reduce_axes)
        var = jnp.mean(jnp.square(xf - mean), axis=reduce_axes)
        m = momentum
        new_mean = (1.0 - m) * running_mean.astype(jnp.float32) + m * mean
        new_var = (1.0 - m) * running_var.astype(jnp.float32) + m * var * (n / (n - 1))
        updated: tuple[jax.Array, jax.Array] | None = (new_mean, new_var)
    else:
        mean = running_mean.astype(jnp.float32)
        var = running_var.astype(jnp.float32)
        updated = None
    # Centre before scaling (not x * mul + shift): no cancellation when |mean| >> std.
    mul = scale.astype(jnp.float32) * jax.lax.rsqrt(var + epsilon)
    y = (x.astype(jnp.float32) - mean) * mul + bias.astype(jnp.float32)
    return y.astype(dtype), updated


class BatchNorm(nn.Module):
    """BatchNorm with ``torch.nn.BatchNorm2d``'s semantics, on the last (channel) axis.

    ``flax.linen.BatchNorm`` differs from PyTorch in two ways, both fixed here:

    * its ``momentum`` is the weight of the *old* statistic (PyTorch's 0.1 is Flax's 0.9);
      ``momentum`` here is PyTorch's: ``running = (1 - momentum) * running + momentum * batch``;
    * it updates the running variance with the *biased* batch variance; PyTorch normalises with
      the biased variance but stores the *unbiased* one (times ``n / (n - 1)``), which is what
      this module does.

    Train mode also counts ``num_batches_tracked`` as PyTorch does, so a model trained in JAX
    exports a complete PyTorch checkpoint. Running statistics are not touched during ``init``.
    Under ``jit`` with a batch-sharded input, the means are global-batch means (XLA inserts the
    cross-device reductions), i.e. PyTorch's ``SyncBatchNorm``.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    scale_init: Initializer = nn.initializers.ones  # zeros: a residual branch's last BN
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        # Stored in param_dtype, as PyTorch's buffers follow the module's dtype.
        stat_dtype = self.param_dtype
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), stat_dtype)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), stat_dtype)
        count = self.variable("batch_stats", "num_batches_tracked", jnp.zeros, (), jnp.int32)

        dtype = self.dtype or jnp.result_type(x, self.param_dtype)
        y, updated = batch_norm(
            x, scale, bias, ra_mean.value, ra_var.value, train=train, momentum=self.momentum,
            epsilon=self.epsilon, dtype=dtype,
        )  # fmt: skip
        if updated is not None and not self.is_initializing():
            ra_mean.value = updated[0].astype(stat_dtype)
            ra_var.value = updated[1].astype(stat_dtype)
            count.value = count.value + 1
        return y


class SEBlock(nn.Module):
    """Squeeze-and-excitation (mirror of ``seres_torch.SEBlock``); params ``fc_0``, ``fc_2``."""

    channels: int
    reduction: int = 16
    min_hidden: int = 4
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        hidden = max(self.min_hidden, self.channels // self.reduction)
        conv = dict(k=1, use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        self.fc: list[Callable[..., Any]] = [
            conv2d(self.channels, hidden, **conv),
            nn.silu,
            conv2d(hidden, self.channels, **conv),
            nn.sigmoid,
        ]

    def __call__(self, x: jax.Array) -> jax.Array:
        w = global_avg_pool(x)
        for layer in self.fc:
            w = layer(w)
        return x * w.astype(x.dtype)


def make_divisible(value: float, divisor: int = 8) -> int:
    """timm's ``make_divisible(v, divisor, round_limit=0.)``: nearest multiple, at least one."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SEModule(nn.Module):
    """timm's ``SEModule`` (mirror of ``seres_torch.layers.SEModule``); params ``fc1``, ``fc2``,
    1×1 convolutions with bias. ``kernel_init`` (Flax only, default PyTorch's) is what the
    model around it re-initialises its convolutions with in PyTorch: ``HE_NORMAL`` in timm's."""

    channels: int
    rd_ratio: float = 1 / 16
    rd_divisor: int = 8
    rd_channels: int | None = None
    kernel_init: Initializer | None = None
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        hidden = make_divisible(self.channels * self.rd_ratio, self.rd_divisor)
        if self.rd_channels is not None:
            hidden = self.rd_channels
        conv = dict(
            k=1, use_bias=True, kernel_init=self.kernel_init, dtype=self.dtype,
            param_dtype=self.param_dtype,
        )  # fmt: skip
        self.fc1 = conv2d(self.channels, hidden, **conv)
        self.fc2 = conv2d(hidden, self.channels, **conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.fc2(nn.relu(self.fc1(global_avg_pool(x))))
        return x * nn.sigmoid(w).astype(x.dtype)


class ConvBNAct(nn.Module):
    """``k×k`` conv (no bias) → BatchNorm → activation; mirror of ``seres_torch.ConvBNAct``."""

    cin: int
    cout: int
    k: int = 3
    s: int = 1
    p: int = 1
    act: str = "silu"
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.conv = conv2d(
            self.cin, self.cout, self.k, self.s, self.p,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip
        self.bn = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype)
        self.activation = make_activation(self.act)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.activation(self.bn(self.conv(x), train))


def count_params(variables: Any) -> int:
    """Trainable parameters (the ``params`` collection), counted as ``seres_torch.count_params``."""
    params = variables.get("params", variables) if hasattr(variables, "get") else variables
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    """ECA's odd kernel size for ``channels`` (timm's ``EcaModule`` rule)."""
    t = int(abs(math.log2(channels) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class ECABlock(nn.Module):
    """Efficient channel attention (mirror of ``seres_torch.ECABlock``); param ``conv``, a
    bias-free 1-D convolution across channels whose kernel is ``(k, 1, 1)``."""

    channels: int
    kernel_size: int | None = None
    gamma: int = 2
    beta: int = 1
    dtype: Dtype = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size or eca_kernel_size(self.channels, self.gamma, self.beta)
        init = torch_uniform(k)
        conv = nn.Conv(
            1, (k,), padding=(((k - 1) // 2, (k - 1) // 2),), use_bias=False,
            kernel_init=init, dtype=self.dtype, param_dtype=self.param_dtype, name="conv",
        )  # fmt: skip
        # The channels become a length-C sequence with one feature, as in PyTorch's view.
        w = conv(global_avg_pool(x).reshape(x.shape[0], self.channels, 1))
        return x * nn.sigmoid(w).reshape(x.shape[0], 1, 1, self.channels).astype(x.dtype)


ATTENTION_LAYERS: dict[str, type[nn.Module]] = {"se": SEModule, "eca": ECABlock}
"""timm's ``create_attn`` vocabulary: attention name -> class built as ``cls(channels)``,
mirroring ``seres_torch.layers.ATTENTION_LAYERS``."""
ATTENTIONS = (*ATTENTION_LAYERS, "none")
"""What a model's ``attn`` may name: the ``ATTENTION_LAYERS`` and ``"none"`` (no attention)."""


def create_attn(
    attn: str | None,
    channels: int,
    *,
    se_layer: Callable[..., nn.Module] = SEModule,
    **kwargs: Any,
) -> nn.Module | None:
    """The channel attention named ``attn`` over ``channels`` (``None``/``"none"``: no module);
    mirror of ``seres_torch.layers.create_attn``. ``se_layer`` is what ``"se"`` builds in the
    caller's family; ``kwargs`` (``dtype``, ``param_dtype``) go to the class's constructor."""
    if attn in (None, "none"):
        return None
    if attn not in ATTENTION_LAYERS:
        raise ValueError(f"unknown attention {attn!r}; expected one of {ATTENTIONS} or None")
    layer = se_layer if attn == "se" else ATTENTION_LAYERS[attn]
    return layer(channels, **kwargs)


class DropPath(nn.Module):
    """Stochastic depth (timm's ``DropPath``; mirror of ``seres_torch.layers.DropPath``): in
    train mode each sample's ``x`` (a residual branch) is zeroed with probability
    ``drop_prob`` and the kept ones are scaled by ``1 / (1 - drop_prob)`` (``scale_by_keep``),
    so the expected value is ``x``; the identity in eval mode and at rate 0 (no RNG needed).

    The mask is one Bernoulli draw per sample from the ``"dropout"`` RNG stream
    (``apply(..., train=True, rngs={"dropout": key})``, as ``nn.Dropout``): shape
    ``(B, 1, 1, 1)`` on NHWC, so it lies along the batch axis and shards with the activations.
    Mask and scale are in the activations' dtype (bfloat16 under bfloat16 compute), as PyTorch
    makes them (``x.new_empty(...).bernoulli_(keep).div_(keep)``); no parameters."""

    drop_prob: float = 0.0
    scale_by_keep: bool = True

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.drop_prob == 0.0 or not train:
            return x
        return drop_path(x, self.make_rng("dropout"), self.drop_prob, self.scale_by_keep)


def drop_path(
    x: jax.Array, key: jax.Array, drop_prob: float, scale_by_keep: bool = True
) -> jax.Array:
    """``DropPath``'s train-mode numerics on arrays (shared with ``seres_jax.nnx.layers``):
    ``x`` with each sample kept with probability ``1 - drop_prob`` (one Bernoulli draw of
    ``key`` per sample) and, with ``scale_by_keep``, the kept ones scaled by ``1 / keep``."""
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    # The scale is rounded to x's dtype from float32, as PyTorch's div_ of a reduced-
    # precision tensor by a Python number computes it.
    mask = jax.random.bernoulli(key, keep, shape)
    scale = mask.astype(jnp.promote_types(x.dtype, jnp.float32))
    if keep > 0.0 and scale_by_keep:
        scale = scale / keep
    return x * scale.astype(x.dtype)
