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
    "CLIP_MODES",
    "OPTIMIZER_NAMES",
    "SCHEDULE_NAMES",
    "TIMM_OPTIMIZER_NAMES",
    "Recipe",
    "WeightDecayMask",
    "adamw",
    "build",
    "clip_grad",
    "constant",
    "create_optimizer",
    "decay_kernels_only",
    "lamb",
    "lars",
    "make_optimizer",
    "make_schedule",
    "one_cycle",
    "one_cycle_momentum",
    "recipe_optimizer",
    "recipe_schedule",
    "rmsprop_tf",
    "sgd",
    "step_schedule",
    "warmup_cosine",
]

WeightDecayMask = Any | Callable[[optax.Params], Any]
"""A pytree of bools shaped like (or a prefix of) the params, or a function of the params
returning one; ``True`` marks the leaves that receive weight decay (optax's ``mask``
convention; ``decay_kernels_only`` is one)."""


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
    not, the usual exclusion in ResNet recipes. It is the Flax equivalent of timm's
    ``param_groups_weight_decay`` (what ``create_optimizer_v2(model, ...)`` uses by default,
    ``filter_bias_and_bn=True``), which excludes parameters with ``ndim <= 1`` or a name
    ending in ``.bias``: every bias of this package's models is 1-D, and timm's ResNets and
    SENets list no further ``no_weight_decay()`` names, so both choose the same parameters
    (``parity_tests/test_optim_timm.py`` checks it on an SE-ResNet).
    """
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


# ---------------------------------------------------------------------- timm optimizers
#
# timm's own optimizers (``timm.optim``), each equal to timm 1.0's CPU implementation (its
# single-tensor path) up to float32 rounding, and timm's gradient clipping. Like
# ``sgd``/``adamw`` above, a scheduled ``learning_rate`` is read at the optimizer-step count,
# as timm's scheduler writing the param group's lr before each ``optimizer.step()``. Weight
# decay follows optax's ``mask`` convention (True = decayed); a leaf with the mask False
# behaves as a parameter in a timm param group with ``weight_decay=0``, which for LAMB and
# LARS also turns the layer-wise adaptation off unless ``always_adapt``.


class _CountState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax's states


class _LambState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax's states
    mu: optax.Updates
    nu: optax.Updates


class _RMSpropTFState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax's states
    square_avg: optax.Updates
    grad_avg: optax.Updates  # () unless centered
    momentum: optax.Updates  # () unless momentum > 0


def _check_range(name: str, value: Any, low: float = 0.0, high: float | None = None) -> None:
    """Raise ``ValueError`` unless ``low <= value`` (and ``value < high``); a schedule (a
    callable) is not checked, nor a traced value (``optax.inject_hyperparams``' lr)."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not low <= number or (high is not None and number >= high):
        valid = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"invalid {name} {value!r}: must be {valid}")


def _decay_flags(mask: WeightDecayMask | None, params: optax.Params) -> Any:
    """A tree shaped like ``params``: per leaf, whether ``mask`` decays it (True if no mask).

    ``mask`` is a pytree of bools that is ``params``' structure or a prefix of it (a bool for
    a whole subtree), or a function of the params returning one, as for ``optax.masked``.
    """
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    flags = mask(params) if callable(mask) else mask
    return jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: flag, sub), flags, params)


def _need_params(name: str, params: optax.Params | None) -> optax.Params:
    if params is None:
        raise ValueError(f"{name} needs the parameters: call update(grads, state, params)")
    return params


def _norm(x: jax.Array) -> jax.Array:
    """The 2-norm of ``x`` as one vector (torch's ``Tensor.norm(2.0)``)."""
    return jnp.sqrt(jnp.sum(jnp.square(x)))


def _global_norm(tree: optax.Updates) -> jax.Array | None:
    """torch's total norm over tensors: the 2-norm of their 2-norms (None for no leaves)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return None
    return _norm(jnp.stack([_norm(leaf) for leaf in leaves]))


def _trust_ratio(w_norm: jax.Array, g_norm: jax.Array, ratio: jax.Array) -> jax.Array:
    """timm's guard: ``ratio``, or 1 where the weight norm or the gradient norm is zero."""
    return jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)


def _scale_by_lamb(
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    grad_averaging: bool,
    max_grad_norm: float | None,
    trust_clip: bool,
    always_adapt: bool,
    bias_correction: bool,
    mask: WeightDecayMask | None,
) -> optax.GradientTransformation:
    """timm's LAMB direction (trust ratio included), without the lr."""

    def init_fn(params: optax.Params) -> _LambState:
        mu = jax.tree.map(jnp.zeros_like, params)
        nu = jax.tree.map(jnp.zeros_like, params)
        return _LambState(jnp.zeros([], jnp.int32), mu, nu)

    def update_fn(
        updates: optax.Updates, state: _LambState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, _LambState]:
        params = _need_params("lamb", params)
        grads = updates
        total = _global_norm(grads) if max_grad_norm is not None else None
        if total is not None and max_grad_norm is not None:
            # Over every parameter at once (timm: across all param groups), a divisor >= 1.
            divisor = jnp.maximum(total / max_grad_norm, 1.0)
            grads = jax.tree.map(lambda g: g / divisor, grads)
        count = optax.safe_increment(state.count)
        if grad_averaging:  # torch's lerp, as in _scale_by_torch_adam
            mu = jax.tree.map(lambda g, m: m + (1.0 - b1) * (g - m), grads, state.mu)
        else:
            mu = jax.tree.map(lambda g, m: b1 * m + g, grads, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1.0 - b2) * g * g, grads, state.nu)
        bc1: jax.typing.ArrayLike = 1.0
        sqrt_bc2: jax.typing.ArrayLike = 1.0
        if bias_correction:
            bc1 = _bias_correction(b1, count)
            sqrt_bc2 = jnp.sqrt(_bias_correction(b2, count))

        def direction(m: jax.Array, v: jax.Array, p: jax.Array, decayed: Any) -> jax.Array:
            update = m / bc1 / (jnp.sqrt(v) / sqrt_bc2 + eps)
            # A leaf outside the mask is in timm's weight_decay=0 group: no decay, and no
            # adaptation unless always_adapt.
            decay = jnp.where(decayed, weight_decay, 0.0)
            update = update + decay * p
            adapt = jnp.logical_or(jnp.logical_and(decayed, weight_decay != 0), always_adapt)
            w_norm, u_norm = _norm(p), _norm(update)
            ratio = _trust_ratio(w_norm, u_norm, w_norm / u_norm)
            if trust_clip:  # LAMBC
                ratio = jnp.minimum(ratio, 1.0)
            return update * jnp.where(adapt, ratio, 1.0)

        directions = jax.tree.map(direction, mu, nu, params, _decay_flags(mask, params))
        return directions, _LambState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def lamb(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    grad_averaging: bool = True,
    max_grad_norm: float | None = 1.0,
    trust_clip: bool = False,
    always_adapt: bool = False,
    bias_correction: bool = True,
    mask: WeightDecayMask | None = None,
) -> optax.GradientTransformation:
    """timm's ``Lamb(lr, bias_correction, betas=(b1, b2), eps, weight_decay, grad_averaging,
    max_grad_norm, trust_clip, always_adapt)`` (NVIDIA's FusedLAMB variant).

    Per step: the gradients are divided by ``max(global_norm / max_grad_norm, 1)``, the norm
    taken over *all* parameters together (timm: across all param groups; ``None`` turns this
    off); ``m = lerp(m, g, 1 - b1)`` (``b1 * m + g`` without ``grad_averaging``),
    ``v = b2 * v + (1 - b2) * g * g``; ``u = m / bc1 / (sqrt(v) / sqrt(bc2) + eps)``
    (``bc = 1`` without ``bias_correction``) plus ``weight_decay * p`` (coupled, into ``u``);
    then, per parameter tensor, ``u *= |p| / |u|`` (the trust ratio: 1 where either norm is
    zero; at most 1 with ``trust_clip``, LAMBC); ``p -= lr * u``.

    The trust ratio is applied only to decayed leaves: timm skips it in param groups with
    ``weight_decay == 0`` (the biases and norm parameters its ``param_groups_weight_decay``
    excludes; with ``weight_decay=0`` everywhere, all of them) unless ``always_adapt``.
    ``mask`` (optax ``mask`` convention, True = decayed; see :func:`decay_kernels_only`)
    chooses those leaves; the default decays and adapts every leaf, as timm given a plain
    parameter list. ``update`` needs ``params``. timm's ``decoupled_decay`` and ``caution``
    options are not provided.
    """
    _check_range("learning rate", learning_rate)
    _check_range("b1", b1, 0.0, 1.0)
    _check_range("b2", b2, 0.0, 1.0)
    _check_range("eps", eps)
    _check_range("weight_decay", weight_decay)
    if max_grad_norm is not None and not (
        isinstance(max_grad_norm, int | float) and max_grad_norm > 0
    ):
        raise ValueError(f"invalid max_grad_norm {max_grad_norm!r}: must be > 0, or None")
    return optax.chain(
        _scale_by_lamb(
            b1,
            b2,
            eps,
            weight_decay,
            grad_averaging,
            max_grad_norm,
            trust_clip,
            always_adapt,
            bias_correction,
            mask,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )


def _scale_by_lars(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float,
    trust_coeff: float,
    eps: float,
    trust_clip: bool,
    always_adapt: bool,
    mask: WeightDecayMask | None,
) -> optax.GradientTransformation:
    """timm's LARS adaptation and weight decay, before momentum and the lr."""

    def init_fn(params: optax.Params) -> _CountState:
        del params
        return _CountState(jnp.zeros([], jnp.int32))

    def update_fn(
        updates: optax.Updates, state: _CountState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, _CountState]:
        params = _need_params("lars", params)
        lr = _at(learning_rate, state.count)

        def adapt_one(g: jax.Array, p: jax.Array, decayed: Any) -> jax.Array:
            decay = jnp.where(decayed, weight_decay, 0.0)
            adapt = jnp.logical_or(jnp.logical_and(decayed, weight_decay != 0), always_adapt)
            w_norm, g_norm = _norm(p), _norm(g)
            ratio = trust_coeff * w_norm / (g_norm + w_norm * decay + eps)
            ratio = _trust_ratio(w_norm, g_norm, ratio)
            if trust_clip:  # LARC: relative to the lr, at most 1
                ratio = jnp.minimum(ratio / lr, 1.0)
            return jnp.where(adapt, (g + decay * p) * ratio, g)

        adapted = jax.tree.map(adapt_one, updates, params, _decay_flags(mask, params))
        return adapted, _CountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def lars(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    trust_coeff: float = 0.001,
    eps: float = 1e-8,
    trust_clip: bool = False,
    always_adapt: bool = False,
    mask: WeightDecayMask | None = None,
) -> optax.GradientTransformation:
    """timm's ``Lars(lr, momentum, dampening, weight_decay, nesterov, trust_coeff, eps,
    trust_clip, always_adapt)`` (LARS; LARC with ``trust_clip``), timm's defaults.

    Per step and parameter tensor, where adapted: ``r = trust_coeff * |p| / (|g| + |p| *
    weight_decay + eps)`` (1 where ``|p|`` or ``|g|`` is zero; ``min(r / lr, 1)`` with
    ``trust_clip``, the lr of this step) and ``g = (g + weight_decay * p) * r``; then
    ``torch.optim.SGD``'s momentum (the first step copies the gradient, see :func:`sgd`) and
    ``p -= lr * g``. Leaves outside ``mask`` get neither decay nor adaptation unless
    ``always_adapt``, as timm's param groups with ``weight_decay=0`` (so with
    ``weight_decay=0`` LARS is plain SGD unless ``always_adapt``); the default decays and
    adapts every leaf. ``update`` needs ``params``. Note timm's ``create_optimizer_v2``
    passes ``momentum=0.9`` unless told otherwise (:func:`create_optimizer` does too); the
    class's own default is 0.
    """
    _check_range("learning rate", learning_rate)
    _check_range("momentum", momentum)
    _check_range("weight_decay", weight_decay)
    _check_range("trust_coeff", trust_coeff)
    _check_range("eps", eps)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    transforms = [
        _scale_by_lars(
            learning_rate, weight_decay, trust_coeff, eps, trust_clip, always_adapt, mask
        )
    ]
    if momentum:
        transforms.append(_torch_momentum(momentum, dampening, nesterov))
    transforms.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*transforms)


def rmsprop_tf(
    learning_rate: optax.ScalarOrSchedule,
    *,
    alpha: float = 0.9,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    decoupled_decay: bool = False,
    lr_in_momentum: bool = True,
    mask: WeightDecayMask | None = None,
) -> optax.GradientTransformation:
    """timm's ``RMSpropTF(lr, alpha, eps, weight_decay, momentum, centered, decoupled_decay,
    lr_in_momentum)``: RMSprop as TensorFlow does it.

    Per step: weight decay is coupled (``g += weight_decay * p``), or with
    ``decoupled_decay`` ``p *= 1 - lr * weight_decay``; ``s += (g * g - s) * (1 - alpha)``
    from ``s = 1`` (torch's RMSprop starts at 0); ``avg = sqrt(s + eps)`` (eps *inside* the
    square root), centered: ``c += (g - c) * (1 - alpha)``, ``avg = sqrt(s - c * c + eps)``.
    With ``momentum > 0``: ``b = momentum * b + lr * g / avg`` and ``p -= b`` (the lr is
    accumulated in the buffer, TensorFlow's way; without ``lr_in_momentum``:
    ``b = momentum * b + g / avg``, ``p -= lr * b``); otherwise ``p -= lr * g / avg``. The
    buffer starts at zero. A scheduled lr is read at each step, so with ``lr_in_momentum`` the
    buffer holds past steps at their own lr, as in timm under a scheduler. ``mask`` chooses
    the decayed leaves (default: all); ``update`` needs ``params`` when ``weight_decay > 0``.
    Defaults are the class's; timm's ``create_optimizer_v2("rmsproptf")`` adds
    ``momentum=0.9`` (see :func:`create_optimizer`).
    """
    _check_range("learning rate", learning_rate)
    _check_range("alpha", alpha)
    if alpha > 1.0:
        raise ValueError(f"invalid alpha {alpha!r}: must be in [0, 1]")
    _check_range("eps", eps)
    _check_range("weight_decay", weight_decay)
    _check_range("momentum", momentum)

    def init_fn(params: optax.Params) -> _RMSpropTFState:
        return _RMSpropTFState(
            jnp.zeros([], jnp.int32),
            jax.tree.map(jnp.ones_like, params),
            jax.tree.map(jnp.zeros_like, params) if centered else (),
            jax.tree.map(jnp.zeros_like, params) if momentum > 0 else (),
        )

    def update_fn(
        updates: optax.Updates, state: _RMSpropTFState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, _RMSpropTFState]:
        lr = jnp.asarray(_at(learning_rate, state.count))
        grads = updates
        decays: Any = None
        if weight_decay:
            params = _need_params("rmsprop_tf with weight decay", params)
            flags = _decay_flags(mask, params)
            decays = jax.tree.map(lambda f: jnp.where(f, weight_decay, 0.0), flags)
            if not decoupled_decay:
                grads = jax.tree.map(lambda g, p, d: g + d * p, grads, params, decays)
        one_minus_alpha = 1.0 - alpha
        square_avg = jax.tree.map(
            lambda g, s: s + (g * g - s) * one_minus_alpha, grads, state.square_avg
        )
        grad_avg = state.grad_avg
        if centered:
            grad_avg = jax.tree.map(lambda g, c: c + (g - c) * one_minus_alpha, grads, grad_avg)
            avg = jax.tree.map(lambda s, c: jnp.sqrt(s - c * c + eps), square_avg, grad_avg)
        else:
            avg = jax.tree.map(lambda s: jnp.sqrt(s + eps), square_avg)
        buffer = state.momentum
        if momentum > 0:
            if lr_in_momentum:
                buffer = jax.tree.map(
                    lambda b, g, a: momentum * b + lr * (g / a), buffer, grads, avg
                )
                steps = jax.tree.map(jnp.negative, buffer)
            else:
                buffer = jax.tree.map(lambda b, g, a: momentum * b + g / a, buffer, grads, avg)
                steps = jax.tree.map(lambda b: -lr * b, buffer)
        else:
            steps = jax.tree.map(lambda g, a: -lr * (g / a), grads, avg)
        if weight_decay and decoupled_decay:
            steps = jax.tree.map(lambda s, p, d: s - (lr * d) * p, steps, params, decays)
        new_state = _RMSpropTFState(optax.safe_increment(state.count), square_avg, grad_avg, buffer)
        return steps, new_state

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------- gradient clipping

CLIP_MODES: tuple[str, ...] = ("norm", "value", "agc")
"""timm's ``--clip-mode`` values, the ``mode`` of ``clip_grad`` (see there)."""
_AGC_EPS = 1e-3  # timm's adaptive_clip_grad default, which dispatch_clip_grad keeps


def _unitwise_norm(x: jax.Array) -> jax.Array:
    """timm's ``unitwise_norm`` in Flax layout: the norm of each output unit, i.e. over
    every axis but the last (Flax kernels are HWIO and ``(in, out)``; torch's, whose output
    unit is dim 0, are OIHW and ``(out, in)``), kept for broadcasting; the whole tensor's
    norm for ``ndim <= 1``."""
    if x.ndim <= 1:
        return _norm(x)
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(x.ndim - 1)), keepdims=True))


def clip_grad(value: float, mode: str = "norm") -> optax.GradientTransformation:
    """timm's ``dispatch_clip_grad(parameters, value, mode)`` (``norm_type=2``), as an optax
    transformation to chain before the optimizer (timm clips before ``optimizer.step()``).

    - ``"norm"``: ``torch.nn.utils.clip_grad_norm_(parameters, value)``: with ``total`` the
      2-norm over all gradients together, every gradient is multiplied by
      ``min(value / (total + 1e-6), 1)``.
    - ``"value"``: ``torch.nn.utils.clip_grad_value_``: each element clamped to
      ``[-value, value]``.
    - ``"agc"``: timm's ``adaptive_clip_grad(parameters, clip_factor=value, eps=1e-3)``
      (NFNets' adaptive gradient clipping): per output unit, a gradient whose norm is at
      least ``max_norm = value * max(|p_unit|, 1e-3)`` is rescaled to
      ``g * max_norm / max(|g_unit|, 1e-6)``. ``update`` then needs ``params``.

      Layout: timm's ``unitwise_norm`` reduces over every dim but dim 0, the output unit of
      torch's ``(out, in)`` and OIHW weights. Flax puts the output unit *last* (Dense kernels
      are ``(in, out)``, conv kernels HWIO), so here the norm is over every axis but the
      last, which gives timm's units for every Dense and conv kernel (grouped ones too); a
      leaf with ``ndim <= 1`` (biases, norm scales) is one unit, its whole-tensor norm, as in
      timm.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"unknown clip mode {mode!r}; valid modes: {', '.join(CLIP_MODES)}")
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"invalid clip value {value!r} for mode {mode!r}: must be > 0")

    def by_norm(updates: optax.Updates, params: optax.Params | None) -> optax.Updates:
        del params
        total = _global_norm(updates)
        if total is None:
            return updates
        coef = jnp.minimum(value / (total + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * coef, updates)

    def by_value(updates: optax.Updates, params: optax.Params | None) -> optax.Updates:
        del params
        return jax.tree.map(lambda g: jnp.clip(g, -value, value), updates)

    def adaptive(updates: optax.Updates, params: optax.Params | None) -> optax.Updates:
        params = _need_params("clip_grad(mode='agc')", params)

        def clip_one(g: jax.Array, p: jax.Array) -> jax.Array:
            max_norm = jnp.maximum(_unitwise_norm(p), _AGC_EPS) * value
            grad_norm = _unitwise_norm(g)
            clipped = g * (max_norm / jnp.maximum(grad_norm, 1e-6))
            return jnp.where(grad_norm < max_norm, g, clipped)

        return jax.tree.map(clip_one, updates, params)

    return optax.stateless({"norm": by_norm, "value": by_value, "agc": adaptive}[mode])


# ------------------------------------------------------------------- timm's optimizer names


class _TimmOptimizer(NamedTuple):
    factory: Callable[..., optax.GradientTransformation]
    has_eps: bool
    has_momentum: bool
    has_betas: bool
    defaults: dict[str, Any]
    mask_arg: str  # the factory's keyword for the weight-decay mask


# timm's registry entries (timm.optim._optim_factory): what each name accepts and its defaults.
_TIMM_OPTIMIZERS: dict[str, _TimmOptimizer] = {
    "sgd": _TimmOptimizer(sgd, False, True, False, {"nesterov": True}, "weight_decay_mask"),
    "nesterov": _TimmOptimizer(sgd, False, True, False, {"nesterov": True}, "weight_decay_mask"),
    "momentum": _TimmOptimizer(sgd, False, True, False, {"nesterov": False}, "weight_decay_mask"),
    "adamw": _TimmOptimizer(adamw, True, False, True, {}, "weight_decay_mask"),
    "lamb": _TimmOptimizer(lamb, True, False, True, {}, "mask"),
    "lars": _TimmOptimizer(lars, True, True, False, {}, "mask"),
    "rmsproptf": _TimmOptimizer(rmsprop_tf, True, True, False, {"alpha": 0.9}, "mask"),
}
TIMM_OPTIMIZER_NAMES: tuple[str, ...] = tuple(_TIMM_OPTIMIZERS)
"""The timm optimizer names ``create_optimizer`` builds (timm's ``--opt``, case-insensitive),
and a recipe's ``optimizer`` may name."""


def create_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    eps: float | None = None,
    betas: tuple[float, float] | None = None,
    mask: WeightDecayMask | None = None,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """The optimizer timm's ``create_optimizer_v2(params, name, lr, weight_decay, momentum,
    eps=..., betas=..., **kwargs)`` builds, by timm's name (``TIMM_OPTIMIZER_NAMES``,
    case-insensitive).

    The names map as timm's registry does: ``"sgd"`` and its alias ``"nesterov"`` are
    :func:`sgd` with Nesterov momentum, ``"momentum"`` without; ``"adamw"`` is :func:`adamw`
    (``torch.optim.AdamW``), ``"lamb"`` :func:`lamb`, ``"lars"`` :func:`lars`,
    ``"rmsproptf"`` :func:`rmsprop_tf` with ``alpha=0.9``. As in timm, ``momentum`` (default
    0.9) goes only to those that take one (sgd, nesterov, momentum, lars, rmsproptf), ``betas``
    only to adamw and lamb, and ``eps`` to all but the SGD names; whatever an optimizer does
    not take is dropped, as timm drops it. Left ``None``, ``eps`` and ``betas`` keep each
    optimizer's own default (timm's ``--opt-eps``/``--opt-betas`` unset): eps 1e-8 for
    adamw and lars, 1e-6 for lamb, 1e-10 for rmsproptf; betas (0.9, 0.999). ``weight_decay``
    defaults to 0, as in ``create_optimizer_v2`` (so AdamW's own 1e-2 never applies).
    ``kwargs`` go to the factory (e.g. ``trust_clip=True``, ``centered=True``).

    ``mask`` chooses the decayed leaves; timm, given a model, excludes biases and norm
    parameters (``filter_bias_and_bn=True``): pass ``mask=decay_kernels_only`` for that.
    The default, ``None``, decays every leaf, as timm given a parameter list.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _TIMM_OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r}; valid names: {', '.join(TIMM_OPTIMIZER_NAMES)}"
        )
    info = _TIMM_OPTIMIZERS[key]
    _check_range("learning rate", learning_rate)
    args: dict[str, Any] = {"weight_decay": weight_decay, **kwargs}
    if eps is not None:
        args["eps"] = eps
    if betas is not None:
        args["betas"] = betas
    for arg, default in info.defaults.items():
        args.setdefault(arg, default)
    if info.has_momentum:
        args.setdefault("momentum", momentum)
    if not info.has_eps:
        args.pop("eps", None)
    if not info.has_betas:
        args.pop("betas", None)
    if "betas" in args:
        given = args.pop("betas")
        if not isinstance(given, tuple | list) or len(given) != 2:
            raise ValueError(f"betas must be a pair (b1, b2), got {given!r}")
        args["b1"], args["b2"] = given
    if mask is not None:
        args[info.mask_arg] = mask
    return info.factory(learning_rate, **args)


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
"""The optimizers ``make_optimizer`` builds by name (``TIMM_OPTIMIZER_NAMES`` has timm's)."""
SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)
"""The per-update schedules ``make_schedule`` builds by name, and a recipe's ``schedule`` may
name."""


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
    def optimizer(self) -> str:
        """The optimizer, one of ``TIMM_OPTIMIZER_NAMES``."""

    @property
    def lr(self) -> float | None:
        """The schedule's peak learning rate; ``None``: not resolved yet (see
        ``TrainConfig.resolved``), which ``recipe_schedule`` refuses."""

    @property
    def momentum(self) -> float:
        """The momentum of the optimizers that take one (the SGD names, ``lars``,
        ``rmsproptf``); the one-cycle schedule cycles it instead."""

    @property
    def nesterov(self) -> bool:
        """For ``"sgd"`` only: ``False`` gives timm's ``"momentum"`` (no Nesterov)."""

    @property
    def weight_decay(self) -> float:
        """The weight-decay coefficient (which leaves it decays: ``decay_all``)."""

    @property
    def decay_all(self) -> bool:
        """``True``: biases and BatchNorm parameters are decayed too (torch's default);
        ``False``: the kernels only (``decay_kernels_only``, timm's default)."""

    @property
    def opt_eps(self) -> float | None:
        """timm's ``--opt-eps``; ``None``: the optimizer's own."""

    @property
    def opt_betas(self) -> tuple[float, float] | None:
        """timm's ``--opt-betas`` (``adamw``, ``lamb``); ``None``: the optimizer's own."""

    @property
    def clip_grad(self) -> float | None:
        """timm's ``--clip-grad``: the clipping threshold; ``None``: no clipping."""

    @property
    def clip_mode(self) -> str:
        """How ``clip_grad`` clips, one of ``CLIP_MODES``."""

    @property
    def schedule(self) -> str:
        """The learning-rate schedule, one of ``SCHEDULE_NAMES``."""

    @property
    def warmup_epochs(self) -> float:
        """The ``"cosine"`` schedule's linear warmup, in epochs (fractions allowed)."""


def recipe_schedule(recipe: Recipe, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """The learning-rate schedule of ``recipe`` over ``total_steps`` optimizer steps."""
    if recipe.lr is None:
        raise ValueError("the recipe's lr is not resolved (e.g. from lr_base)")
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


# The classifier, which timm's train.py leaves out of adaptive gradient clipping
# (`get_clip_parameters(exclude_head=True)`: the model's last two parameters, the
# classifier's weight and bias): the zoo's and the notebook's `fc`, the legacy models'
# `last_linear`.
_HEADS = ("fc", "last_linear")


def _not_head(params: optax.Params) -> Any:
    # By path, not by rebuilding a dict: the mask must have the params' own tree type (an
    # NNX model's nnx.State as much as a linen dict).
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[0], "key", None) not in _HEADS, params
    )


def recipe_optimizer(
    recipe: Recipe, schedule: optax.Schedule, total_steps: int
) -> optax.GradientTransformation:
    """The optimizer of ``recipe``, driven by ``schedule`` over ``total_steps``, behind its
    gradient clipping (timm's ``--clip-grad``/``--clip-mode``; AGC leaves the classifier out,
    as timm's ``train.py`` does). With the one-cycle schedule the momentum (AdamW's β1) cycles
    too, replacing ``momentum``, as torch's ``OneCycleLR`` does by default
    (``cycle_momentum=True``). ``"sgd"`` is Nesterov SGD unless ``recipe.nesterov`` is
    False; every other name is timm's (``create_optimizer``)."""
    mask = None if recipe.decay_all else decay_kernels_only
    kwargs: dict[str, Any] = {"weight_decay": recipe.weight_decay, "mask": mask}
    cycled = one_cycle_momentum(total_steps) if recipe.schedule == "onecycle" else None
    name = recipe.optimizer
    if name == "sgd":
        momentum = recipe.momentum if cycled is None else cycled
        nesterov = recipe.nesterov and (cycled is not None or recipe.momentum > 0)
        name = "nesterov" if nesterov else "momentum"
        kwargs["momentum"] = momentum
    elif name in ("momentum", "nesterov", "lars", "rmsproptf"):
        kwargs["momentum"] = recipe.momentum if cycled is None else cycled
    elif cycled is not None:  # adamw, lamb: torch's OneCycleLR cycles beta1
        b2 = recipe.opt_betas[1] if recipe.opt_betas else 0.999
        kwargs["betas"] = (cycled, b2)
    if "betas" not in kwargs and recipe.opt_betas is not None:
        kwargs["betas"] = tuple(recipe.opt_betas)
    tx = create_optimizer(name, schedule, eps=recipe.opt_eps, **kwargs)
    if recipe.clip_grad is None:
        return tx
    clip = clip_grad(recipe.clip_grad, recipe.clip_mode)
    if recipe.clip_mode == "agc":
        clip = optax.masked(clip, _not_head)
    return optax.chain(clip, tx)


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
