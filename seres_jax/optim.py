"""Optimizers and learning-rate schedules for JAX training.

This module owns the optax side of training parity with PyTorch: every factory here
reproduces a named ``torch.optim`` optimizer or ``torch.optim.lr_scheduler`` scheduler (up
to float32 rounding), so a recipe tuned in
PyTorch transfers unchanged. Schedules are optax schedules (step -> lr) evaluated at the
optimizer-step count, i.e. they equal a torch scheduler that is stepped once after every
``optimizer.step()``.

It also owns the mapping from a training recipe (any object with ``Recipe``'s fields, e.g.
``seres_jax.train.TrainConfig``) to its schedule and optimizer: ``build`` gives both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "OPTIMIZER_NAMES",
    "SCHEDULE_NAMES",
    "Recipe",
    "WeightDecayMask",
    "adamw",
    "build",
    "constant",
    "decay_kernels_only",
    "make_optimizer",
    "make_schedule",
    "one_cycle",
    "one_cycle_momentum",
    "recipe_optimizer",
    "recipe_schedule",
    "sgd",
    "step_schedule",
    "warmup_cosine",
]

# A pytree of bools shaped like (or a prefix of) the params, or a function of the params
# returning one; True marks leaves that receive weight decay (optax's ``mask`` convention).
WeightDecayMask = Any | Callable[[optax.Params], Any]


# --------------------------------------------------------------------------- schedules


def _sin_squared_ramp(numerator: jax.Array, denominator: float) -> jax.Array:
    """``sin(pi/2 * numerator/denominator)**2``, i.e. ``(1 - cos(pi * x)) / 2``.

    Torch anneals with ``(1 + cos(pi * pct)) / 2``; in float32 that cancels near
    ``pct = 1`` (``1 + cos`` of an angle near pi), which costs ~1e-5 relative error
    where the lr is small. The half-angle form evaluated at the *distance to the end*
    keeps ~1e-7 relative error across the whole ramp.
    """
    return jnp.square(jnp.sin((0.5 * math.pi) * (numerator / denominator)))


def warmup_cosine(
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start_factor: float = 1.0 / 3.0,
    final_lr: float = 0.0,
) -> optax.Schedule:
    """Linear warmup followed by cosine decay to ``final_lr``.

    Equals, for every step, the lr of::

        SequentialLR(
            opt,
            [LinearLR(opt, start_factor=warmup_start_factor, end_factor=1.0,
                      total_iters=warmup_steps),
             CosineAnnealingLR(opt, T_max=total_steps - warmup_steps, eta_min=final_lr)],
            milestones=[warmup_steps],
        )

    and, when ``warmup_steps == 0``, of
    ``CosineAnnealingLR(opt, T_max=total_steps, eta_min=final_lr)``; the default
    ``warmup_start_factor`` is ``LinearLR``'s. Like ``CosineAnnealingLR``, the cosine is
    periodic: past ``total_steps`` the lr rises again, so size ``total_steps`` to the run.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < total_steps, got {warmup_steps=} and {total_steps=}"
        )
    if not 0.0 < warmup_start_factor <= 1.0:
        raise ValueError(f"warmup_start_factor must be in (0, 1], got {warmup_start_factor}")
    decay_steps = total_steps - warmup_steps

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        t = jnp.asarray(step, jnp.float32)
        # max() only guards the 0/0 in the unselected branch when there is no warmup.
        warmup_frac = t / max(warmup_steps, 1)
        warm = base_lr * (warmup_start_factor + (1.0 - warmup_start_factor) * warmup_frac)
        # (1 + cos(pi * (t - W) / D)) / 2 == sin^2(pi/2 * (total - t) / D).
        cos = final_lr + (base_lr - final_lr) * _sin_squared_ramp(total_steps - t, decay_steps)
        return jnp.where(t < warmup_steps, warm, cos)

    return schedule


def _one_cycle_ramp(
    total_steps: int, pct_start: float
) -> Callable[[jax.typing.ArrayLike], tuple[jax.Array, jax.Array]]:
    """``step -> (rising, ramp)`` of torch's two-phase cosine 1cycle (``three_phase=False``):
    ``ramp`` goes 0 -> 1 while ``rising`` (steps ``0 .. pct_start * total_steps - 1``), then
    back 1 -> 0 at step ``total_steps - 1``, and holds 0 past it."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0.0 <= pct_start <= 1.0:
        raise ValueError(f"pct_start must be in [0, 1], got {pct_start}")
    # Torch's phase ends, computed in float64 exactly as torch does; a step is in the
    # rise while step <= peak_step, which for integer steps is step <= floor(peak_step)
    # (comparing against a float32-rounded peak_step could flip a boundary step).
    peak_step = float(pct_start * total_steps) - 1
    last_step = total_steps - 1
    last_rise_step = math.floor(peak_step)
    # Each phase only contains step 0 (resp. last_step) when it is shorter than one
    # step, where the ramp numerator is 0 whatever the length; clamping the length to 1
    # avoids the 0/0 torch hits there without changing any in-range value.
    rise_len = max(peak_step, 1.0)
    fall_len = max(last_step - peak_step, 1.0)

    def ramp(step: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
        t = jnp.asarray(step, jnp.float32)
        rising = jnp.asarray(step) <= last_rise_step
        steps_left = jnp.maximum(last_step - t, 0.0)
        # The fall is written from its end, so no term cancels near it.
        value = jnp.where(
            rising, _sin_squared_ramp(t, rise_len), _sin_squared_ramp(steps_left, fall_len)
        )
        return rising, value

    return ramp


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> optax.Schedule:
    """The 1cycle policy: cosine rise to ``max_lr``, then cosine decay to a minimum.

    Equals the lr of ``OneCycleLR(opt, max_lr, total_steps=total_steps,
    pct_start=pct_start, anneal_strategy="cos", div_factor=div_factor,
    final_div_factor=final_div_factor, three_phase=False)`` on steps
    ``0 .. total_steps - 1``: it starts at ``max_lr / div_factor``, peaks at step
    ``pct_start * total_steps - 1`` (torch's boundary, not ``pct_start * total_steps``)
    and reaches ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1``.
    Torch raises past ``total_steps``; this schedule holds the minimum instead.
    Torch's default also cycles the momentum (``cycle_momentum=True``): pass
    :func:`one_cycle_momentum` as SGD's ``momentum`` or AdamW's ``b1`` for that.
    """
    ramp = _one_cycle_ramp(total_steps, pct_start)
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        rising, value = ramp(step)
        # (lower lr) + (gap) * ramp, so no term cancels.
        low = jnp.where(rising, initial_lr, min_lr)
        return low + (max_lr - low) * value

    return schedule


def one_cycle_momentum(
    total_steps: int,
    pct_start: float = 0.3,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> optax.Schedule:
    """The momentum ``OneCycleLR`` sets with ``cycle_momentum=True`` (torch's default).

    It moves against the lr of :func:`one_cycle` with the same ``total_steps`` and
    ``pct_start``: ``max_momentum`` at the start, ``base_momentum`` at the lr's peak, back
    to ``max_momentum`` at the end. Torch writes it into SGD's ``momentum`` or Adam's
    ``betas[0]``, replacing the optimizer's own; pass it as :func:`sgd`'s ``momentum`` or
    :func:`adamw`'s ``b1``.
    """
    ramp = _one_cycle_ramp(total_steps, pct_start)

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        return max_momentum - (max_momentum - base_momentum) * ramp(step)[1]

    return schedule


def step_schedule(base_lr: float, step_size: int, gamma: float = 0.1) -> optax.Schedule:
    """``base_lr * gamma ** (step // step_size)``: ``StepLR(opt, step_size, gamma)``."""
    if step_size < 1:
        raise ValueError(f"step_size must be a positive integer, got {step_size}")
    if gamma <= 0.0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    # float32(gamma)**k compounds gamma's rounding k times (8e-7 relative for 0.9**30);
    # exp(k * log(gamma)), with the log taken in float64, stays within ~1e-7.
    log_gamma = math.log(gamma)

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        # Integer floor division: a float32 quotient could round k*s - 1 up to k for
        # large step counts and decay one step early.
        decays = jnp.floor_divide(jnp.asarray(step, jnp.int32), step_size)
        return base_lr * jnp.exp(decays.astype(jnp.float32) * log_gamma)

    return schedule


def constant(lr: float) -> optax.Schedule:
    """A constant lr (torch: no scheduler)."""
    return optax.constant_schedule(lr)


# -------------------------------------------------------------------------- optimizers


class _MomentumState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax's states
    buffer: optax.Updates


def _at(value: float | optax.Schedule, count: jax.Array) -> jax.typing.ArrayLike:
    """A hyperparameter at optimizer step ``count`` (steps taken before this one), where the
    lr schedule is read too: a torch scheduler writes both into the param group."""
    return value(count) if callable(value) else value


def _torch_momentum(
    momentum: float | optax.Schedule, dampening: float, nesterov: bool
) -> optax.GradientTransformation:
    """``torch.optim.SGD``'s momentum buffer, without the lr.

    optax.trace keeps ``b = g + mu * b`` from a zero buffer, which equals torch only
    without dampening: torch updates ``b = mu * b + (1 - dampening) * g`` but *copies*
    the first gradient (``b = g``, undampened), which no zero-initialised dampened
    accumulation reproduces. Hence a step count to special-case the first step.
    """

    def init_fn(params: optax.Params) -> _MomentumState:
        return _MomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(
        updates: optax.Updates, state: _MomentumState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, _MomentumState]:
        del params
        first = state.count == 0
        mu = _at(momentum, state.count)
        buffer = jax.tree.map(
            lambda g, b: jnp.where(first, g, mu * b + (1.0 - dampening) * g),
            updates,
            state.buffer,
        )
        updates = jax.tree.map(lambda g, b: g + mu * b, updates, buffer) if nesterov else buffer
        return updates, _MomentumState(optax.safe_increment(state.count), buffer)

    return optax.GradientTransformation(init_fn, update_fn)


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float | optax.Schedule = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    weight_decay_mask: WeightDecayMask | None = None,
) -> optax.GradientTransformation:
    """``torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov)``.

    Per step: ``g += weight_decay * p`` (coupled decay, before momentum);
    ``b = g`` on the first step, else ``b = momentum * b + (1 - dampening) * g``;
    ``g = g + momentum * b`` if nesterov else ``g = b``; ``p -= lr * g`` with the
    current step's lr, so the buffer never contains the lr (as in torch).

    optax.sgd differs in two ways closed here: it has no coupled weight decay, and
    its optax.trace momentum cannot express torch's dampening (see _torch_momentum).
    ``weight_decay_mask`` (optax ``mask`` convention, True = decay) restricts decay to
    some leaves, like a torch param group with ``weight_decay=0``; the default decays
    every leaf, as torch does. ``momentum`` may be a schedule (e.g.
    :func:`one_cycle_momentum`), read at the same step as the lr.
    """
    if not callable(momentum) and momentum < 0.0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    if weight_decay < 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if nesterov and ((not callable(momentum) and momentum <= 0.0) or dampening != 0.0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    # Torch skips the decay and momentum terms when they are zero; so do we.
    transforms = []
    if weight_decay:
        transforms.append(optax.add_decayed_weights(weight_decay, weight_decay_mask))
    if momentum:
        transforms.append(_torch_momentum(momentum, dampening, nesterov))
    transforms.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*transforms)


class _AdamState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax's states
    mu: optax.Updates
    nu: optax.Updates


def _bias_correction(decay: jax.typing.ArrayLike, count: jax.Array) -> jax.Array:
    """``1 - decay**count`` to ~1e-7 relative error in float32.

    optax evaluates ``1 - decay**count`` in float32, where ``decay = 0.999`` is stored
    as 0.99900001287 and ``1 - decay`` loses 1.3e-5 relative accuracy; torch uses
    float64. ``-expm1(count * log(decay))`` with ``log`` taken in float64 avoids the
    cancellation (``decay == 0`` gives ``log = -inf`` and correctly a correction of 1).
    A scheduled decay (an array) takes its ``log`` in float32, as it is computed.
    """
    log_decay: float | jax.Array
    if isinstance(decay, float | int):
        log_decay = math.log(decay) if decay > 0.0 else -math.inf
    else:
        log_decay = jnp.log(decay)
    return -jnp.expm1(count.astype(jnp.float32) * log_decay)


def _scale_by_torch_adam(
    b1: float | optax.Schedule, b2: float, eps: float
) -> optax.GradientTransformation:
    """The bias-corrected Adam direction of ``torch.optim.Adam``, without the lr.

    Torch: ``m.lerp_(g, 1 - b1)``; ``v = b2 * v + (1 - b2) * g * g``;
    ``denom = sqrt(v) / sqrt(bc2) + eps``; direction ``m / denom / bc1``. optax's
    scale_by_adam places eps identically (``m_hat / (sqrt(v_hat) + eps)`` with
    ``sqrt(v / bc2) == sqrt(v) / sqrt(bc2)``); what differs is the precision of its
    float32 bias corrections (see _bias_correction). A scheduled ``b1`` is read at the
    step the lr is; torch then corrects with ``1 - b1_t ** t``, the current beta only.
    """

    def init_fn(params: optax.Params) -> _AdamState:
        # Two separate trees: sharing one would make a donated state donate a buffer twice.
        mu = jax.tree.map(jnp.zeros_like, params)
        nu = jax.tree.map(jnp.zeros_like, params)
        return _AdamState(jnp.zeros([], jnp.int32), mu, nu)

    def update_fn(
        updates: optax.Updates, state: _AdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, _AdamState]:
        del params
        beta1 = _at(b1, state.count)
        count = optax.safe_increment(state.count)
        # Written as torch's lerp (m + w * (g - m)) to round like it.
        mu = jax.tree.map(lambda g, m: m + (1.0 - beta1) * (g - m), updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1.0 - b2) * g * g, updates, state.nu)
        bc1 = _bias_correction(beta1, count)
        sqrt_bc2 = jnp.sqrt(_bias_correction(b2, count))
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) / sqrt_bc2 + eps) / bc1, mu, nu)
        return direction, _AdamState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float | optax.Schedule = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    weight_decay_mask: WeightDecayMask | None = None,
) -> optax.GradientTransformation:
    """``torch.optim.AdamW(lr, betas=(b1, b2), eps, weight_decay)`` (amsgrad=False).

    Torch first decays ``p *= 1 - lr * weight_decay``, then steps
    ``p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``. Here the update is
    ``-lr * (adam_direction + weight_decay * p)``, optax.adamw's arrangement. The two
    agree exactly in real arithmetic: the decay is scaled by the current (scheduled) lr
    in both, and applying it "before" the Adam step changes nothing because the Adam
    direction depends only on gradients, never on ``p``. The one numerical gap in
    optax.adamw is its float32 bias correction (1.3e-5 relative off at step 1, see
    _bias_correction): over 25 test steps it lands 7e-6 (relative to the parameters'
    scale) off torch, against 5e-7 for this factory, whose _scale_by_torch_adam
    closes it.
    ``weight_decay_mask`` works as in :func:`sgd`; ``b1`` may be a schedule, as
    :func:`sgd`'s momentum may.
    """
    for index, beta in enumerate((b1, b2)):
        if not callable(beta) and not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
    if eps < 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if weight_decay < 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    transforms = [_scale_by_torch_adam(b1, b2, eps)]
    if weight_decay:
        transforms.append(optax.add_decayed_weights(weight_decay, weight_decay_mask))
    transforms.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*transforms)


def decay_kernels_only(params: optax.Params) -> Any:
    """A ``weight_decay_mask`` that decays only leaves with ``ndim > 1``.

    Conv and dense kernels are decayed; biases and BatchNorm scale/bias (all 1-D) are
    not, the usual exclusion in ResNet recipes.
    """
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


# ------------------------------------------------------------------------- dispatchers

_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "adamw": adamw,
}
_SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "cosine": warmup_cosine,
    "onecycle": one_cycle,
    "step": step_schedule,
    "constant": constant,
}
OPTIMIZER_NAMES: tuple[str, ...] = tuple(_OPTIMIZERS)
SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def make_optimizer(
    name: str, learning_rate: optax.ScalarOrSchedule, **kwargs: Any
) -> optax.GradientTransformation:
    """Build the optimizer ``name`` ("sgd" or "adamw"); ``kwargs`` go to its factory."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}")
    return _OPTIMIZERS[name](learning_rate, **kwargs)


def make_schedule(name: str, **kwargs: Any) -> optax.Schedule:
    """Build the schedule ``name``; ``kwargs`` go to its factory.

    "cosine" -> :func:`warmup_cosine`, "onecycle" -> :func:`one_cycle`,
    "step" -> :func:`step_schedule`, "constant" -> :func:`constant`.
    """
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}")
    return _SCHEDULES[name](**kwargs)


# ------------------------------------------------------------------------------ recipes


class Recipe(Protocol):
    """The fields of a training recipe that choose its optimizer and schedule."""

    @property
    def optimizer(self) -> str: ...
    @property
    def lr(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def nesterov(self) -> bool: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def decay_all(self) -> bool: ...  # True: biases and BatchNorm too (torch's default)
    @property
    def schedule(self) -> str: ...
    @property
    def warmup_epochs(self) -> float: ...


def recipe_schedule(recipe: Recipe, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """The learning-rate schedule of ``recipe`` over ``total_steps`` optimizer steps."""
    kwargs: dict[str, Any] = {
        "cosine": {
            "base_lr": recipe.lr,
            "total_steps": total_steps,
            "warmup_steps": min(int(recipe.warmup_epochs * steps_per_epoch), total_steps - 1),
        },
        "onecycle": {"max_lr": recipe.lr, "total_steps": total_steps},
        "step": {"base_lr": recipe.lr, "step_size": max(total_steps // 3, 1)},
        "constant": {"lr": recipe.lr},
    }.get(recipe.schedule, {})
    return make_schedule(recipe.schedule, **kwargs)


def recipe_optimizer(
    recipe: Recipe, schedule: optax.Schedule, total_steps: int
) -> optax.GradientTransformation:
    """The optimizer of ``recipe``, driven by ``schedule`` over ``total_steps``. With the
    one-cycle schedule its momentum (AdamW's β1) cycles too, replacing ``momentum``, as
    torch's ``OneCycleLR`` does by default (``cycle_momentum=True``)."""
    mask = None if recipe.decay_all else decay_kernels_only
    kwargs: dict[str, Any] = {"weight_decay": recipe.weight_decay, "weight_decay_mask": mask}
    cycled = one_cycle_momentum(total_steps) if recipe.schedule == "onecycle" else None
    if recipe.optimizer == "sgd":
        momentum = recipe.momentum if cycled is None else cycled
        nesterov = recipe.nesterov and (cycled is not None or recipe.momentum > 0)
        kwargs.update(momentum=momentum, nesterov=nesterov)
    elif cycled is not None:
        kwargs["b1"] = cycled
    return make_optimizer(recipe.optimizer, schedule, **kwargs)


def build(
    recipe: Recipe, total_steps: int, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, learning-rate schedule)`` of ``recipe`` for a run of ``total_steps``
    optimizer steps, ``steps_per_epoch`` to an epoch."""
    schedule = recipe_schedule(recipe, total_steps, steps_per_epoch)
    return recipe_optimizer(recipe, schedule, total_steps), schedule


def __getattr__(name: str) -> Any:
    # Deprecated in 0.2: the losses live in seres_jax.losses (see CHANGELOG.md).
    if name == "cross_entropy":
        import warnings

        from .losses import cross_entropy

        warnings.warn(
            "seres_jax.optim.cross_entropy moved to seres_jax.losses.cross_entropy",
            DeprecationWarning,
            stacklevel=2,
        )
        return cross_entropy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
