"""timm's ``ModelEmaV3`` for Flax variables: an exponential moving average of the weights.

This module owns the EMA of a model's variables — the whole pytree, ``params`` and
``batch_stats`` alike, as timm averages the whole ``state_dict`` (parameters and buffers,
BatchNorm's running mean and variance included: timm's default ``exclude_buffers=False``). It
is pure functions, jittable and usable inside a jitted train step; the EMA is a pytree the
caller keeps next to the train state.

- ``ema_decay(step, ...)``: timm's ``ModelEmaV3.get_decay(step)``, with ``step`` the number of
  optimizer updates done so far (timm's ``train.py`` calls ``model_ema.update(model,
  step=num_updates)`` after each update, ``num_updates`` counting from 1). The decay is 0
  while ``step <= update_after_step + 1``: the first update copies the weights. Then it is
  ``decay``, or with ``use_warmup`` ``1 - (1 + s / warmup_gamma) ** -warmup_power`` with
  ``s = step - update_after_step - 1``, capped at ``decay`` and floored at ``min_decay``.
- ``ema_update(ema, new, decay)``: one update of every leaf. Float leaves move towards the new
  value with ``weight = 1 - decay`` using PyTorch's ``lerp`` (what timm's
  ``torch._foreach_lerp_`` runs): ``ema + weight (new - ema)`` for ``weight < 0.5``, else
  ``new - (1 - weight) (new - ema)``, so a decay of 0 copies exactly. A new value of another
  float dtype than the EMA (a bfloat16 model, a float32 EMA) is timm's ``mul_``/``add_``
  path, ``ema decay + new weight``. Non-float leaves (PyTorch's ``num_batches_tracked``,
  counters) are copied, as timm copies non-float buffers.
- ``init_ema(variables, dtype=None)``: the EMA's first value, a copy (timm's ``deepcopy``),
  float leaves optionally kept in another dtype (timm's ``dtype=``: a float32 EMA of a
  bfloat16 model).
- ``EmaConfig``: the hyper-parameters, a frozen (hashable, so ``jit``-static) dataclass
  checked on construction, with ``decay_at(step)`` and ``update(ema, new, step)``.

The decay is computed in float32, as PyTorch rounds timm's Python-float lerp weight to the
tensors' float32; ``EmaConfig.update`` computes that weight, ``1 - decay``, without going through
the float32 decay, whose rounding near 1 changes the weight (1.3e-5 relative at
``decay=0.998``, 1.7e-4 at 0.9999): ``ema_update`` with a float32 decay has that rounding,
with a Python-float decay it has timm's weight. Not carried over from
timm: stochastic rounding of bfloat16 EMA leaves (here a bfloat16 EMA rounds to nearest, and
updates below its resolution are lost: keep the EMA in float32 with ``init_ema(...,
dtype=jnp.float32)``), and the ``device=`` option (place the pytree where you like).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["EmaConfig", "ema_decay", "ema_update", "init_ema"]


def _is_host(value: object) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _check(name: str, value: object, low: float, high: float | None = None) -> None:
    """``ValueError`` unless ``low <= value <= high`` (no upper bound when ``high`` is None),
    for host values; traced ones are the caller's business."""
    if not _is_host(value):
        return
    v = float(value)  # type: ignore[arg-type]
    if not (low <= v and (high is None or v <= high)):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_hyper(
    decay: object, min_decay: object, update_after_step: object, warmup_gamma: object
) -> None:
    _check("decay", decay, 0.0, 1.0)
    _check("min_decay", min_decay, 0.0, 1.0)
    _check("update_after_step", update_after_step, 0.0)
    if _is_host(warmup_gamma) and not float(warmup_gamma) > 0:  # type: ignore[arg-type]
        raise ValueError(f"warmup_gamma must be > 0, got {warmup_gamma}")


def _steps_past(step: ArrayLike, update_after_step: ArrayLike) -> jax.Array:
    """timm's ``max(0, step - update_after_step - 1)``, int32."""
    return jnp.maximum(jnp.asarray(step, jnp.int32) - update_after_step - 1, 0)


def ema_decay(
    step: ArrayLike,
    *,
    decay: ArrayLike = 0.9999,
    min_decay: ArrayLike = 0.0,
    update_after_step: ArrayLike = 0,
    use_warmup: bool = False,
    warmup_gamma: ArrayLike = 1.0,
    warmup_power: ArrayLike = 2 / 3,
) -> jax.Array:
    """timm's ``ModelEmaV3.get_decay(step)`` as a float32 scalar (see the module docstring).

    ``step`` is the number of optimizer updates so far, 1 at the first; it and the float
    hyper-parameters may be traced, ``use_warmup`` is static. ``ValueError`` for a host
    ``decay`` or ``min_decay`` outside ``[0, 1]``, a negative ``update_after_step`` or a
    ``warmup_gamma`` that is not positive.
    """
    _check_hyper(decay, min_decay, update_after_step, warmup_gamma)
    steps = _steps_past(step, update_after_step)
    if use_warmup:
        value = 1.0 - (1.0 + steps.astype(jnp.float32) / warmup_gamma) ** -jnp.asarray(
            warmup_power, jnp.float32
        )
        value = jnp.maximum(jnp.minimum(value, decay), min_decay)
    else:
        value = jnp.asarray(decay, jnp.float32)
    return jnp.where(steps > 0, value, 0.0).astype(jnp.float32)


def _lerp_tree(ema: Any, new: Any, weight: ArrayLike) -> Any:
    """Every leaf of ``ema`` moved ``weight`` of the way to ``new``'s, as timm does."""
    weight = jnp.asarray(weight, jnp.float32)
    small = weight < 0.5

    def leaf(e: ArrayLike, n: ArrayLike) -> jax.Array:
        e, n = jnp.asarray(e), jnp.asarray(n)
        if not jnp.issubdtype(e.dtype, jnp.floating):
            return n.astype(e.dtype)  # timm: ema_v.copy_(model_v)
        compute = jnp.promote_types(e.dtype, jnp.float32)  # PyTorch's opmath type
        ec, w = e.astype(compute), weight.astype(compute)
        if n.dtype != e.dtype:  # timm's mixed-dtype path: mul_(1 - weight), add_(alpha=weight)
            out = ec * (1.0 - w) + n.astype(compute) * w
        else:  # torch.lerp: from the nearer end
            nc = n.astype(compute)
            out = jnp.where(small, w, w - 1.0) * (nc - ec) + jnp.where(small, ec, nc)
        return out.astype(e.dtype)

    return jax.tree.map(leaf, ema, new)


def ema_update(ema: Any, new: Any, decay: ArrayLike) -> Any:
    """One EMA update: ``ema`` (a pytree) moved to ``new`` (the same structure) with
    ``decay``, e.g. ``ema_decay(step, ...)``; a pytree of ``ema``'s structure and dtypes.

    Float leaves are PyTorch's ``lerp`` with weight ``1 - decay`` (timm's rounding, see the
    module docstring), non-float leaves are copied from ``new``. A host ``decay`` outside
    ``[0, 1]`` is a ``ValueError``; a Python-float one gives exactly timm's weight.
    """
    _check("decay", decay, 0.0, 1.0)
    if isinstance(decay, (int, float)):
        return _lerp_tree(ema, new, 1.0 - float(decay))  # in float64, as timm's weight
    return _lerp_tree(ema, new, 1.0 - jnp.asarray(decay, jnp.float32))


def init_ema(variables: Any, dtype: jax.typing.DTypeLike | None = None) -> Any:
    """The EMA's first value: a copy of ``variables`` (no buffer shared, so donating one does
    not delete the other), its float leaves cast to ``dtype`` when given."""

    def leaf(x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if dtype is not None and jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.array(x, dtype=dtype, copy=True)
        return jnp.array(x, copy=True)

    return jax.tree.map(leaf, variables)


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    """timm ``ModelEmaV3``'s hyper-parameters (the same names and defaults), checked on
    construction; hashable, so it may be a static argument of a jitted train step.

    timm's ``train.py`` makes ``ModelEmaV3(model, decay=args.model_ema_decay,
    use_warmup=args.model_ema_warmup)``: ``EmaConfig(decay=..., use_warmup=...)``.
    """

    decay: float = 0.9999
    min_decay: float = 0.0
    update_after_step: int = 0
    use_warmup: bool = False
    warmup_gamma: float = 1.0
    warmup_power: float = 2 / 3

    def __post_init__(self) -> None:
        _check_hyper(self.decay, self.min_decay, self.update_after_step, self.warmup_gamma)

    def decay_at(self, step: ArrayLike) -> jax.Array:
        """``ema_decay(step)`` with these hyper-parameters."""
        return ema_decay(step, **dataclasses.asdict(self))

    def weight_at(self, step: ArrayLike) -> jax.Array:
        """The lerp weight ``1 - decay_at(step)``, float32, computed without the float32
        decay's rounding (1 at the copying updates)."""
        steps = _steps_past(step, self.update_after_step)
        if self.use_warmup:
            value = (1.0 + steps.astype(jnp.float32) / self.warmup_gamma) ** -jnp.float32(
                self.warmup_power
            )
            value = jnp.minimum(jnp.maximum(value, 1.0 - self.decay), 1.0 - self.min_decay)
        else:
            value = jnp.float32(1.0 - self.decay)
        return jnp.where(steps > 0, value, 1.0).astype(jnp.float32)

    def update(self, ema: Any, new: Any, step: ArrayLike) -> Any:
        """``ema_update(ema, new, decay_at(step))``, with the weight from ``weight_at``."""
        return _lerp_tree(ema, new, self.weight_at(step))
