"""timm's learning-rate schedulers as optax schedules.

This module owns timm's learning-rate schedulers, as ``timm/scheduler`` does in timm: the
``cosine``, ``tanh``, ``poly``, ``step``, ``multistep``, ``constant`` and ``none`` schedules
as pure, jittable optax schedules (``update count -> lr``), the metric-driven ``plateau``
schedule as a small host-side object (:class:`PlateauLR`), the factory
:func:`create_scheduler` with the argument names of timm's ``create_scheduler_v2`` (and its
epoch count, cooldown included), and timm's batch-size scaling of the base lr
(:func:`scale_lr`).

**What a schedule equals.** timm's ``train.py`` builds the scheduler (which sets the lr to
``warmup_lr_init`` if there is warmup, else to the base lr), calls
``scheduler.step_update(num_updates)`` after every optimizer update (it acts only when the
scheduler steps on updates, ``--sched-on-updates``) and ``scheduler.step(epoch + 1, metric)``
at the end of every epoch. A schedule here gives, for optimizer update ``u`` (the number of
updates done before it: optax's update count), the lr that update runs with in that loop:
with ``t = u // updates_per_epoch`` (stepping on epochs; integer division) or ``t = u`` (on
updates), the construction lr when ``t == 0`` and timm's ``_get_lr(t)`` after. Pass one as
the ``learning_rate`` of an optax optimizer (e.g. :func:`seres_jax.optim.sgd`): it is read
inside the jitted update, so no lr crosses from host to device per step.

**Precision.** timm computes in float64, optax's schedules in float32. Here the host runs
timm's own float64 arithmetic (``_get_lr``, transcribed) once per distinct value and rounds
each to float32: every lr is timm's correctly rounded, within 2**-24 (6e-8) relative, and
integer decisions (which epoch, cycle or decay) are timm's exactly. The jitted schedule
only indexes these tables: per epoch or update while a cyclic schedule (cosine, tanh,
poly) runs (``lr_min`` after its cycles, as in timm; at most 2**24 entries), per decay
count for step and multistep (after a per-time warmup table). The counts are integer
arithmetic in the schedule; a fractional step interval ``a / b`` (in lowest terms, after
float64 rounding) is exact up to ``2**31 / b`` steps (two million for an epoch count with
three decimals), decided in float32 beyond. Past ``2**30`` updates a schedule holds its
value.

**Use.** ``s = create_scheduler(lr, sched=..., num_epochs=..., updates_per_epoch=...)``,
then ``optim.sgd(s.schedule, ...)`` (any optax optimizer), and train ``s.num_epochs``
epochs: stepping on epochs or on updates is the schedule's business, the loop is the same.
For ``plateau``, ``s.plateau`` gives the lr per epoch from the metrics (see
:class:`PlateauLR`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "SCHEDULER_NAMES",
    "LRSchedule",
    "PlateauLR",
    "cosine_lr",
    "create_scheduler",
    "multistep_lr",
    "poly_lr",
    "scale_lr",
    "step_lr",
    "tanh_lr",
]

SCHEDULER_NAMES: tuple[str, ...] = (
    "cosine",
    "tanh",
    "step",
    "constant",
    "multistep",
    "plateau",
    "poly",
    "none",
)
"""The ``sched`` names ``create_scheduler`` takes: timm's (``create_scheduler_v2``'s, its
``--sched``) in its order, but for ``wsd`` and ``rsqrt``."""
_CYCLIC = ("cosine", "tanh", "poly")  # timm's schedulers with ``get_cycle_length``
_MAX_T = 2**30  # largest scheduler time evaluated; a schedule holds its value beyond
_MAX_TABLE = 2**24  # most values one schedule tabulates (64 MiB of float32)
_MAX_DECAYS = 2**16  # step: decay counts tabulated; the lr holds after as many decays
_INT32_MAX = 2**31 - 1

# ------------------------------------------------------------------------------ validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int, high: int = _MAX_T) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _check_float(
    name: str,
    value: Any,
    low: float = 0.0,
    *,
    strict: bool = False,
    below: float | None = None,
    at_most: float | None = None,
) -> float:
    """``value`` as a float, or ``ValueError`` unless it is finite and ``>= low`` (``> low``
    if ``strict``), ``< below`` and ``<= at_most`` (where given)."""
    if isinstance(value, bool | str):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    bounds = [f"> {low}" if strict else f">= {low}"]
    ok = number > low if strict else number >= low
    if below is not None:
        bounds.append(f"< {below}")
        ok = ok and number < below
    if at_most is not None:
        bounds.append(f"<= {at_most}")
        ok = ok and number <= at_most
    if not ok:
        raise ValueError(f"{name} must be {' and '.join(bounds)}, got {value!r}")
    return number


def _f32(values: Sequence[float]) -> np.ndarray:
    """float64 values correctly rounded to float32."""
    return np.asarray(values, np.float64).astype(np.float32)


# -------------------------------------------------------------------------- timm's formulas


class _Timm:
    """One timm scheduler: its ``_get_lr(t)`` as the float64 code timm runs (``host``), the
    lr its construction sets (``initial``), and ``lr``, a jittable ``t -> float32 lr`` for
    int32 times ``t >= 0`` (``t == 0`` gives ``initial``). ``t`` counts epochs or updates,
    whichever the scheduler steps on."""

    def __init__(
        self, lr: float, warmup_t: int, warmup_lr_init: float, warmup_prefix: bool
    ) -> None:
        self.base = _check_float("lr", lr)
        self.warmup_t = _check_int("warmup_t", warmup_t, 0, _MAX_TABLE)
        self.warmup_lr_init = _check_float("warmup_lr_init", warmup_lr_init)
        self.warmup_prefix = bool(warmup_prefix)
        # timm's ``warmup_steps`` for one param group; tanh sets its own.
        self.warmup_step = (self.base - self.warmup_lr_init) / warmup_t if warmup_t else 1.0

    @property
    def initial(self) -> float:
        return self.warmup_lr_init if self.warmup_t else self.base

    def host(self, t: int) -> float:
        """timm's ``_get_lr(t)``."""
        if t < self.warmup_t:
            return self.warmup_lr_init + t * self.warmup_step
        if self.warmup_prefix:
            t = t - self.warmup_t
        return self._host(t)

    def value(self, t: int) -> float:
        """The lr in effect at time ``t`` of timm's loop: ``initial`` at 0, then ``host``."""
        return self.initial if t == 0 else self.host(t)

    def _host(self, t: int) -> float:
        raise NotImplementedError

    def lr(self, t: jax.Array) -> jax.Array:
        raise NotImplementedError


class _Constant(_Timm):
    """``sched="none"``: timm creates no scheduler; the optimizer keeps its lr."""

    def __init__(self, lr: float) -> None:
        super().__init__(lr, 0, 0.0, False)

    def _host(self, t: int) -> float:
        return self.base

    def lr(self, t: jax.Array) -> jax.Array:
        return jnp.full(t.shape, np.float32(self.base))


class _Cyclic(_Timm):
    """The cycles timm's cosine, tanh and poly schedulers share: tabulated per time until
    the cycles end, ``lr_min`` after (timm's value there, whatever the time)."""

    def __init__(
        self,
        lr: float,
        t_initial: int,
        lr_min: float,
        cycle_mul: float,
        cycle_decay: float,
        cycle_limit: int,
        warmup_t: int,
        warmup_lr_init: float,
        warmup_prefix: bool,
        k_decay: float = 1.0,
    ) -> None:
        super().__init__(lr, warmup_t, warmup_lr_init, warmup_prefix)
        self.t_initial = _check_int("t_initial", t_initial, 1, _MAX_TABLE)
        self.lr_min = _check_float("lr_min", lr_min)
        self.cycle_mul = _check_float("cycle_mul", cycle_mul, strict=True)
        self.cycle_decay = _check_float("cycle_decay", cycle_decay, strict=True)
        self.cycle_limit = _check_int("cycle_limit", cycle_limit, 1, _INT32_MAX)
        self.k_decay = _check_float("k_decay", k_decay, strict=True)
        self._table: np.ndarray | None = None

    def _cycle(self, t: int) -> tuple[int, float, float]:
        """timm's cycle at (prefix-shifted) time ``t``: index, length, position in it."""
        if self.cycle_mul != 1:
            i = math.floor(math.log(1 - t / self.t_initial * (1 - self.cycle_mul), self.cycle_mul))
            t_i = self.cycle_mul**i * self.t_initial
            t_curr = t - (1 - self.cycle_mul**i) / (1 - self.cycle_mul) * self.t_initial
            return i, t_i, t_curr
        i = t // self.t_initial
        return i, self.t_initial, t - (self.t_initial * i)

    @property
    def domain_end(self) -> float:
        """Where timm's cycle index fails (the ``log`` of a non-positive number): shrinking
        cycles (``cycle_mul < 1``) add up to ``t_initial / (1 - cycle_mul)``."""
        return self.t_initial / (1 - self.cycle_mul) if self.cycle_mul < 1 else math.inf

    def cycle_length(self) -> int:
        """timm's ``get_cycle_length()``: the cycles' total length, warmup prefix included."""
        cycles = max(1, self.cycle_limit)
        if self.cycle_mul == 1.0:
            t = self.t_initial * cycles
        else:
            t = math.floor(-self.t_initial * (self.cycle_mul**cycles - 1) / (1 - self.cycle_mul))
        return t + self.warmup_t if self.warmup_prefix else t

    def host(self, t: int) -> float:
        shifted = t - self.warmup_t if self.warmup_prefix else t
        if t >= self.warmup_t and shifted >= self.domain_end:
            return self.lr_min  # timm fails here (math domain error); the cycles are over
        return super().host(t)

    @property
    def table(self) -> np.ndarray:
        """float32 lr per time, from 0 to past the cycles' end (a time after which timm's
        cycle index is at least ``cycle_limit``, or its domain is left)."""
        if self._table is None:
            end = max(self.cycle_length(), self.warmup_t) + 2
            if end > _MAX_TABLE:
                raise ValueError(
                    f"the schedule's cycles last {end} steps, more than the {_MAX_TABLE} "
                    "tabulated: step on epochs, or use fewer or shorter cycles"
                )
            self._table = _f32([self.value(t) for t in range(end + 1)])
        return self._table

    def lr(self, t: jax.Array) -> jax.Array:
        table = self.table
        return jnp.asarray(table)[jnp.minimum(t, len(table) - 1)]


class _Cosine(_Cyclic):
    """timm's ``CosineLRScheduler``."""

    def _host(self, t: int) -> float:
        i, t_i, t_curr = self._cycle(t)
        gamma = self.cycle_decay**i
        lr_max = self.base * gamma
        k = self.k_decay
        if i < self.cycle_limit:
            return self.lr_min + 0.5 * (lr_max - self.lr_min) * (
                1 + math.cos(math.pi * t_curr**k / t_i**k)
            )
        return self.lr_min


class _Tanh(_Cyclic):
    """timm's ``TanhLRScheduler``."""

    def __init__(self, *args: Any, lb: float = -7.0, ub: float = 3.0, **kwargs: Any) -> None:
        self.lb = _check_float("lb", lb, -math.inf)
        self.ub = _check_float("ub", ub, -math.inf)
        if not self.lb < self.ub:
            raise ValueError(f"need lb < ub, got lb={lb} and ub={ub}")
        super().__init__(*args, **kwargs)
        if self.warmup_t and not self.warmup_prefix:
            # timm warms up towards the schedule's value at warmup_t, not the base lr.
            self.warmup_step = (self.host(self.warmup_t) - self.warmup_lr_init) / self.warmup_t

    def _host(self, t: int) -> float:
        i, t_i, t_curr = self._cycle(t)
        if i < self.cycle_limit:
            gamma = self.cycle_decay**i
            lr_max = self.base * gamma
            tr = t_curr / t_i
            return self.lr_min + 0.5 * (lr_max - self.lr_min) * (
                1 - math.tanh(self.lb * (1.0 - tr) + self.ub * tr)
            )
        return self.lr_min


class _Poly(_Cyclic):
    """timm's ``PolyLRScheduler``."""

    def __init__(self, *args: Any, power: float = 0.5, **kwargs: Any) -> None:
        self.power = _check_float("power", power, strict=True)
        super().__init__(*args, **kwargs)

    def _host(self, t: int) -> float:
        i, t_i, t_curr = self._cycle(t)
        gamma = self.cycle_decay**i
        lr_max = self.base * gamma
        k = self.k_decay
        if i < self.cycle_limit:
            return self.lr_min + (lr_max - self.lr_min) * (1 - t_curr**k / t_i**k) ** self.power
        return self.lr_min


def _floor_div_plan(d: float) -> tuple[int, int, int, int]:
    """``(a, b, c, t_max)`` with ``t // d == max((t * b + c) // a, 0)`` (Python's float floor
    division: the exact floor of ``t / d``) for integers ``0 <= t <= t_max``, and ``t * b +
    c`` within int32 there.

    ``a / b`` is a rational close to ``d`` (``d`` itself when its denominator is small, as
    for any decimal epoch count times an integer update count). If ``a / b >= d``, ``t / d``
    lies above ``t * b / a`` by less than ``1 / a``, the distance to the next integer, so the
    floors agree (``c = 0``); if ``a / b < d``, it lies below by as little: the floors agree
    except where ``t * b / a`` is an integer, one less there (``c = -1``).
    """
    exact = Fraction(d)
    best = (1, 1, 0, -1)
    for bound in (2**k for k in range(21)):
        rational = exact.limit_denominator(bound)
        a, b = rational.numerator, rational.denominator
        if not 0 < a <= _INT32_MAX:
            continue
        c = -1 if rational < exact else 0
        t_max = (_INT32_MAX - 1) // b
        if rational != exact:
            t_max = min(t_max, math.ceil(1 / (a * abs(1 / exact - Fraction(b, a)))) - 1)
        if t_max > best[3]:
            best = (a, b, c, t_max)
        if t_max >= _MAX_T:
            break
    return best


class _Decaying(_Timm):
    """``lr * decay_rate ** n`` after the warmup, for a count ``n`` of decays done: the
    warmup tabulated per time, the lr per count."""

    decay_rate: float

    def __init__(
        self, lr: float, decay_rate: float, warmup_t: int, warmup_lr_init: float, prefix: bool
    ) -> None:
        super().__init__(lr, warmup_t, warmup_lr_init, prefix)
        self.decay_rate = _check_float("decay_rate", decay_rate, strict=True, at_most=1.0)
        self._tables: tuple[np.ndarray, np.ndarray] | None = None

    def _decays(self, t: int) -> float:
        """timm's count of decays at (prefix-shifted) time ``t`` (a float for a float
        ``decay_t``, as in timm)."""
        raise NotImplementedError

    def _jax_decays(self, t: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _max_decays(self) -> int:
        raise NotImplementedError

    def _host(self, t: int) -> float:
        return self.base * (self.decay_rate ** self._decays(t))

    @property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(float32 lr per warmup time, float32 lr per decay count)."""
        if self._tables is None:
            warm = _f32([self.value(t) for t in range(self.warmup_t)])
            by_count = []
            for n in range(self._max_decays() + 1):
                by_count.append(self.base * (self.decay_rate**n))
                if np.float32(by_count[-1]) == 0 or self.decay_rate == 1.0:
                    break
            self._tables = warm, _f32(by_count)
        return self._tables

    def lr(self, t: jax.Array) -> jax.Array:
        warm, by_count = self.tables
        shifted = jnp.maximum(t - self.warmup_t, 0) if self.warmup_prefix else t
        n = jnp.minimum(self._jax_decays(shifted), len(by_count) - 1)
        value = jnp.asarray(by_count)[n]
        if self.warmup_t:
            value = jnp.where(
                t < self.warmup_t, jnp.asarray(warm)[jnp.minimum(t, len(warm) - 1)], value
            )
        return jnp.where(t == 0, np.float32(self.initial), value)


class _Step(_Decaying):
    """timm's ``StepLRScheduler`` (and ``constant``: one with ``decay_rate=1``)."""

    def __init__(
        self,
        lr: float,
        decay_t: float,
        decay_rate: float,
        warmup_t: int,
        warmup_lr_init: float,
        warmup_prefix: bool,
    ) -> None:
        super().__init__(lr, decay_rate, warmup_t, warmup_lr_init, warmup_prefix)
        _check_float("decay_t", decay_t, strict=True)
        self.decay_t = decay_t  # int or float, as timm is given it: `t // decay_t` follows
        self._plan = _floor_div_plan(float(decay_t))

    def _decays(self, t: int) -> float:
        return t // self.decay_t

    def _max_decays(self) -> int:
        return _MAX_DECAYS

    def _jax_decays(self, t: jax.Array) -> jax.Array:
        a, b, c, t_max = self._plan
        exact = jnp.maximum(jnp.floor_divide(jnp.minimum(t, max(t_max, 0)) * b + c, a), 0)
        if t_max >= _MAX_T:
            return exact
        # Beyond t_max (an interval with no small-denominator rational near it): float32.
        approx = jnp.floor(t.astype(jnp.float32) / np.float32(self.decay_t)).astype(jnp.int32)
        return jnp.where(t <= t_max, exact, approx)


class _MultiStep(_Decaying):
    """timm's ``MultiStepLRScheduler``: milestone ``m`` applies from ``t == m - 1`` on (timm's
    deliberate convention, one step before ``torch.optim.lr_scheduler.MultiStepLR``)."""

    def __init__(
        self,
        lr: float,
        decay_t: Sequence[float],
        decay_rate: float,
        warmup_t: int,
        warmup_lr_init: float,
        warmup_prefix: bool,
    ) -> None:
        super().__init__(lr, decay_rate, warmup_t, warmup_lr_init, warmup_prefix)
        milestones = [_check_float("decay milestone", m) for m in decay_t]
        if milestones != sorted(milestones):
            raise ValueError(f"decay milestones must be increasing, got {list(decay_t)}")
        self.decay_t = list(decay_t)
        # t + 1 >= m  <=>  t + 1 >= ceil(m), for integer t.
        self._milestones = np.asarray([min(math.ceil(m), _INT32_MAX) for m in milestones], np.int32)

    def _decays(self, t: int) -> float:
        return bisect.bisect_right(self.decay_t, t + 1)

    def _max_decays(self) -> int:
        return len(self.decay_t)

    def _jax_decays(self, t: jax.Array) -> jax.Array:
        if not self.decay_t:
            return jnp.zeros_like(t)
        count = jnp.searchsorted(jnp.asarray(self._milestones), t + 1, side="right")
        return count.astype(jnp.int32)


def _schedule(spec: _Timm, t_in_epochs: bool, updates_per_epoch: int) -> optax.Schedule:
    """The optax schedule of ``spec`` driven as timm's ``train.py`` drives it."""
    updates_per_epoch = _check_int("updates_per_epoch", updates_per_epoch, 1)
    if isinstance(spec, _Cyclic):
        _ = spec.table  # tabulate (and refuse) now, not at the first trace
    elif isinstance(spec, _Decaying):
        _ = spec.tables

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        u = jnp.clip(jnp.asarray(count), 0, _MAX_T).astype(jnp.int32)
        return spec.lr(u // updates_per_epoch if t_in_epochs else u)

    return schedule


# ------------------------------------------------------------------------- the schedules


def cosine_lr(
    lr: float,
    t_initial: int,
    *,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    k_decay: float = 1.0,
    t_in_epochs: bool = True,
    updates_per_epoch: int = 1,
) -> optax.Schedule:
    """timm's ``CosineLRScheduler`` (same arguments and defaults, no noise) as an optax
    schedule of the update count.

    Times (``t_initial``, ``warmup_t``) count epochs when ``t_in_epochs``, with
    ``updates_per_epoch`` updates each, else updates. Cycle ``i`` runs ``lr_min + (lr *
    cycle_decay**i - lr_min) * (1 + cos(pi * (t_curr / t_i)**k_decay)) / 2`` over
    ``t_i = t_initial * cycle_mul**i``; after ``cycle_limit`` cycles the lr is ``lr_min``.
    The warmup rises linearly from ``warmup_lr_init`` to ``lr`` over ``warmup_t``; without
    ``warmup_prefix`` it overlays the first cycle's start (so the lr drops at its end to
    the cycle's value at ``warmup_t``), with it the cycles start after it.
    """
    spec = _Cosine(
        lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t,
        warmup_lr_init, warmup_prefix, k_decay,
    )  # fmt: skip
    return _schedule(spec, t_in_epochs, updates_per_epoch)


def tanh_lr(
    lr: float,
    t_initial: int,
    *,
    lb: float = -7.0,
    ub: float = 3.0,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    t_in_epochs: bool = True,
    updates_per_epoch: int = 1,
) -> optax.Schedule:
    """timm's ``TanhLRScheduler``: cycles as :func:`cosine_lr`'s, shaped
    ``(1 - tanh(lb + (ub - lb) * t_curr / t_i)) / 2``. Without ``warmup_prefix`` the warmup
    rises to the schedule's value at ``warmup_t`` (timm's rule), not to ``lr``."""
    spec = _Tanh(
        lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t,
        warmup_lr_init, warmup_prefix, lb=lb, ub=ub,
    )  # fmt: skip
    return _schedule(spec, t_in_epochs, updates_per_epoch)


def poly_lr(
    lr: float,
    t_initial: int,
    *,
    power: float = 0.5,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    k_decay: float = 1.0,
    t_in_epochs: bool = True,
    updates_per_epoch: int = 1,
) -> optax.Schedule:
    """timm's ``PolyLRScheduler``: cycles as :func:`cosine_lr`'s, shaped
    ``(1 - (t_curr / t_i)**k_decay)**power``."""
    spec = _Poly(
        lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t,
        warmup_lr_init, warmup_prefix, k_decay, power=power,
    )  # fmt: skip
    return _schedule(spec, t_in_epochs, updates_per_epoch)


def step_lr(
    lr: float,
    decay_t: float,
    *,
    decay_rate: float = 1.0,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = True,
    t_in_epochs: bool = True,
    updates_per_epoch: int = 1,
) -> optax.Schedule:
    """timm's ``StepLRScheduler``: ``lr * decay_rate ** (t // decay_t)`` after the warmup
    (``decay_t`` may be fractional, e.g. EfficientNet's 2.4 epochs; ``t // decay_t`` is
    Python's exact floor). timm's class defaults ``warmup_prefix`` to True, its factory to
    False."""
    spec = _Step(lr, decay_t, decay_rate, warmup_t, warmup_lr_init, warmup_prefix)
    return _schedule(spec, t_in_epochs, updates_per_epoch)


def multistep_lr(
    lr: float,
    decay_t: Sequence[float],
    *,
    decay_rate: float = 1.0,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = True,
    t_in_epochs: bool = True,
    updates_per_epoch: int = 1,
) -> optax.Schedule:
    """timm's ``MultiStepLRScheduler``: ``lr * decay_rate ** n`` with ``n`` the number of
    milestones ``m`` (increasing) with ``m <= t + 1``: timm decays one step *before* each
    milestone."""
    spec = _MultiStep(lr, decay_t, decay_rate, warmup_t, warmup_lr_init, warmup_prefix)
    return _schedule(spec, t_in_epochs, updates_per_epoch)


# ---------------------------------------------------------------------------- plateau


class PlateauLR:
    """timm's ``PlateauLRScheduler`` (torch's ``ReduceLROnPlateau`` under a linear warmup) on
    the host, with its whole state in :meth:`state_dict`.

    Use: ``plateau.lr`` is the lr of the current epoch; at the end of epoch ``e`` call
    ``plateau.step(e + 1, metric)`` (timm's call), which returns the next epoch's lr. Feed
    it to the jitted step as a float32 scalar that changes once per epoch, e.g. through
    ``optax.inject_hyperparams``, injecting the lr only::

        tx = optax.inject_hyperparams(lambda learning_rate: optim.sgd(learning_rate, 0.9))(
            learning_rate=plateau.lr
        )
        ...  # an epoch of jitted updates
        lr = plateau.step(epoch + 1, metric)
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)

    The value changes, the compiled step does not.

    Semantics (timm 1.0's, with torch's ``ReduceLROnPlateau`` in ``rel`` threshold mode):
    during warmup (``epoch <= warmup_t``) the lr is ``warmup_lr_init + epoch * (lr -
    warmup_lr_init) / warmup_t`` and the metric is ignored; after it, a metric better than
    ``best * (1 -+ threshold)`` (``mode`` "min"/"max") becomes the best, any other counts a
    bad epoch; more than ``patience_t`` bad epochs multiply the lr by ``decay_rate`` (not
    below ``lr_min``, and only if that lowers it by more than ``eps``) and start
    ``cooldown_t`` epochs in which bad epochs are not counted. ``metric=None`` (an epoch
    without evaluation) leaves everything as it is. Unlike timm's, whose ``state_dict``
    keeps only ``best`` and ``last_epoch``, a restored state resumes exactly.
    """

    def __init__(
        self,
        lr: float,
        *,
        decay_rate: float = 0.1,
        patience_t: int = 10,
        threshold: float = 1e-4,
        cooldown_t: int = 0,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        lr_min: float = 0.0,
        mode: str = "max",
        eps: float = 1e-8,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.base = _check_float("lr", lr)
        # torch refuses factor >= 1; 0 would zero the lr at the first plateau.
        self.decay_rate = _check_float("decay_rate", decay_rate, strict=True, below=1.0)
        self.patience_t = _check_int("patience_t", patience_t, 0)
        self.threshold = _check_float("threshold", threshold)
        self.cooldown_t = _check_int("cooldown_t", cooldown_t, 0)
        self.warmup_t = _check_int("warmup_t", warmup_t, 0)
        self.warmup_lr_init = _check_float("warmup_lr_init", warmup_lr_init)
        self.lr_min = _check_float("lr_min", lr_min)
        self.mode = mode
        self.eps = _check_float("eps", eps)
        self.warmup_step = (self.base - self.warmup_lr_init) / warmup_t if warmup_t else 1.0
        self.initial = self.warmup_lr_init if warmup_t else self.base
        self._state: dict[str, float | int] = {
            "lr": self.initial,
            "best": math.inf if mode == "min" else -math.inf,
            "num_bad_epochs": 0,
            "cooldown_counter": 0,
            "last_epoch": 0,
        }

    @property
    def lr(self) -> float:
        """The lr of the current epoch."""
        return float(self._state["lr"])

    def step(self, epoch: int, metric: float | None = None) -> float:
        """timm's ``step(epoch, metric)`` at the end of epoch ``epoch - 1``; returns the lr
        of epoch ``epoch``."""
        state = self._state
        if epoch <= self.warmup_t:
            state["lr"] = self.warmup_lr_init + epoch * self.warmup_step
            return self.lr
        if metric is None:
            return self.lr
        current = float(metric)
        state["last_epoch"] = int(state["last_epoch"]) + 1
        best = float(state["best"])
        if self.mode == "min":
            better = current < best * (1.0 - self.threshold)
        else:
            better = current > best * (self.threshold + 1.0)
        if better:
            state["best"] = current
            state["num_bad_epochs"] = 0
        else:
            state["num_bad_epochs"] = int(state["num_bad_epochs"]) + 1
        if int(state["cooldown_counter"]) > 0:
            state["cooldown_counter"] = int(state["cooldown_counter"]) - 1
            state["num_bad_epochs"] = 0
        if int(state["num_bad_epochs"]) > self.patience_t:
            old = self.lr
            new = max(old * self.decay_rate, self.lr_min)
            if old - new > self.eps:
                state["lr"] = new
            state["cooldown_counter"] = self.cooldown_t
            state["num_bad_epochs"] = 0
        return self.lr

    def state_dict(self) -> dict[str, float | int]:
        """The whole state, plain numbers (``best`` may be infinite): a checkpoint's."""
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, float | int]) -> None:
        """Take up a ``state_dict`` (a checkpoint's); ``ValueError`` if a key is missing."""
        missing = set(self._state) - set(state)
        if missing:
            raise ValueError(f"plateau state lacks {sorted(missing)}")
        for key in self._state:
            value = state[key]
            self._state[key] = float(value) if key in ("lr", "best") else int(value)


# ----------------------------------------------------------------------------- factory


@dataclass(frozen=True)
class LRSchedule:
    """What :func:`create_scheduler` builds.

    ``schedule`` (``None`` for ``plateau``) maps the optimizer's update count to the lr of
    that update, jittable: pass it as an optax optimizer's ``learning_rate``. ``num_epochs``
    is the number of epochs the run trains (timm's second return value: cycles, cooldown
    and a warmup prefix included). ``plateau`` is the host-side scheduler for
    ``sched="plateau"``. :meth:`lr_at` gives timm's float64 lr of an update on the host.
    """

    sched: str
    num_epochs: int
    updates_per_epoch: int
    step_on_epochs: bool
    schedule: optax.Schedule | None
    plateau: PlateauLR | None = None
    _spec: _Timm | None = field(default=None, repr=False, compare=False)

    @property
    def total_updates(self) -> int:
        """The optimizer updates of the whole run, ``num_epochs`` of ``updates_per_epoch``."""
        return self.num_epochs * self.updates_per_epoch

    @property
    def initial_lr(self) -> float:
        """The lr of the first update (``warmup_lr`` if there is warmup)."""
        if self.plateau is not None:
            return self.plateau.initial
        assert self._spec is not None
        return self._spec.initial

    def lr_at(self, update: int) -> float:
        """timm's (float64) lr of update ``update`` (not for ``plateau``)."""
        if self._spec is None:
            raise ValueError("a plateau schedule depends on metrics: use its .plateau")
        update = _check_int("update", update, 0)
        t = update // self.updates_per_epoch if self.step_on_epochs else update
        return self._spec.value(t)


def create_scheduler(
    lr: float,
    *,
    sched: str = "cosine",
    num_epochs: int = 300,
    decay_epochs: float | None = None,
    decay_milestones: Sequence[float] = (90, 180, 270),
    cooldown_epochs: int = 0,
    patience_epochs: int = 10,
    decay_rate: float = 0.1,
    min_lr: float = 0.0,
    warmup_lr: float = 1e-5,
    warmup_epochs: int = 0,
    warmup_prefix: bool = False,
    cycle_mul: float = 1.0,
    cycle_decay: float = 0.1,
    cycle_limit: int = 1,
    k_decay: float = 1.0,
    plateau_mode: str = "max",
    step_on_epochs: bool = True,
    updates_per_epoch: int,
) -> LRSchedule:
    """timm's ``create_scheduler_v2`` for base lr ``lr`` (its arguments and defaults; no
    noise): the schedule, and the epochs to train.

    As in timm: with ``step_on_epochs=False`` (``--sched-on-updates``) every epoch count is
    converted to updates and the lr changes after every update, else after every epoch;
    ``decay_epochs=None`` is 90; ``cosine``/``tanh``/``poly`` train their cycles' length
    (``num_epochs`` per cycle, times ``cycle_mul`` per cycle, floored) plus
    ``cooldown_epochs`` (at ``min_lr``), every other schedule ``num_epochs`` and *ignores*
    ``cooldown_epochs``; a warmup prefix adds ``warmup_epochs`` to either; ``step`` and
    ``multistep`` ignore ``min_lr``; ``poly``'s power is ``decay_rate``; ``plateau`` steps
    on epochs only, with timm's fixed threshold (1e-4) and no cooldown, and ignores
    ``warmup_prefix`` (but the run still grows by it); ``none`` keeps ``lr`` throughout (no
    warmup). Raises ``ValueError`` for an unknown ``sched`` and for arguments timm would
    crash on or silently misapply (``decay_rate`` must be in (0, 1] for ``step`` and
    ``multistep``, in (0, 1) for ``plateau``, positive for ``poly``).
    """
    if sched not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {sched!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    num_epochs = _check_int("num_epochs", num_epochs, 1)
    warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
    cooldown_epochs = _check_int("cooldown_epochs", cooldown_epochs, 0)
    patience_epochs = _check_int("patience_epochs", patience_epochs, 0)
    updates_per_epoch = _check_int("updates_per_epoch", updates_per_epoch, 1)
    _check_float("decay_rate", decay_rate, strict=True)
    _check_float("min_lr", min_lr)
    _check_float("warmup_lr", warmup_lr)
    if plateau_mode not in ("min", "max"):
        raise ValueError(f"plateau_mode must be 'min' or 'max', got {plateau_mode!r}")
    if sched != "none" and warmup_epochs and not warmup_prefix and warmup_epochs >= num_epochs:
        raise ValueError(
            f"warmup_epochs={warmup_epochs} >= num_epochs={num_epochs}: without warmup_prefix "
            "the warmup is part of num_epochs and would leave no schedule after it"
        )
    if decay_epochs is None:
        decay_epochs = 90
    per = 1 if step_on_epochs else updates_per_epoch
    t_initial = num_epochs * per
    warmup_t = warmup_epochs * per
    decay_t = decay_epochs * per
    milestones = [m * per for m in decay_milestones]
    cooldown_t = cooldown_epochs * per
    spec: _Timm | None = None
    plateau = None
    if sched in _CYCLIC:
        cyclic: dict[str, Any] = dict(
            lr=lr, t_initial=t_initial, lr_min=min_lr, cycle_mul=cycle_mul,
            cycle_decay=cycle_decay, cycle_limit=cycle_limit, warmup_t=warmup_t,
            warmup_lr_init=warmup_lr, warmup_prefix=warmup_prefix,
        )  # fmt: skip
        if sched == "cosine":
            spec = _Cosine(**cyclic, k_decay=k_decay)
        elif sched == "tanh":
            spec = _Tanh(**cyclic)
        else:
            spec = _Poly(**cyclic, k_decay=k_decay, power=decay_rate)
    elif sched == "step":
        _check_float("decay_epochs", decay_epochs, strict=True)
        spec = _Step(lr, decay_t, decay_rate, warmup_t, warmup_lr, warmup_prefix)
    elif sched == "constant":
        spec = _Step(lr, 1, 1.0, warmup_t, warmup_lr, warmup_prefix)
    elif sched == "multistep":
        spec = _MultiStep(lr, milestones, decay_rate, warmup_t, warmup_lr, warmup_prefix)
    elif sched == "plateau":
        if not step_on_epochs:
            raise ValueError("the plateau scheduler steps on epochs only (timm asserts it)")
        plateau = PlateauLR(
            lr, decay_rate=decay_rate, patience_t=patience_epochs, cooldown_t=0,
            warmup_t=warmup_t, warmup_lr_init=warmup_lr, lr_min=min_lr, mode=plateau_mode,
        )  # fmt: skip
    else:
        spec = _Constant(lr)

    if isinstance(spec, _Cyclic):
        total = spec.cycle_length() + cooldown_t
        _check_domain(spec, sched, (total // per) * per, "epochs" if per == 1 else "updates")
        num_epochs = total // per
    elif warmup_prefix:
        num_epochs += warmup_epochs
    schedule = None if spec is None else _schedule(spec, step_on_epochs, updates_per_epoch)
    return LRSchedule(sched, num_epochs, updates_per_epoch, step_on_epochs, schedule, plateau, spec)


def _check_domain(spec: _Cyclic, sched: str, t_end: int, unit: str) -> None:
    """timm evaluates its schedule up to ``t_end`` (the run's last ``step``/``step_update``):
    shrinking cycles make its cycle index fail (``math domain error``) from ``t_initial /
    (1 - cycle_mul)`` on, which a cooldown can reach."""
    t = t_end - spec.warmup_t if spec.warmup_prefix else t_end
    if t >= spec.domain_end:
        raise ValueError(
            f"{sched} with cycle_mul={spec.cycle_mul} < 1: its cycles add up to "
            f"{spec.domain_end:g} {unit}, which the run (cooldown included) reaches at "
            f"{t} {unit}; timm fails there (math domain error): shorten the cooldown"
        )


# ------------------------------------------------------------------------------ lr scale


def scale_lr(
    lr_base: float,
    global_batch_size: float,
    *,
    lr_base_size: float = 256,
    lr_base_scale: str | None = None,
    opt: str = "sgd",
) -> float:
    """timm ``train.py``'s lr from ``--lr-base`` when ``--lr`` is not given:
    ``lr_base * (global_batch_size / lr_base_size)``, square-rooted for ``lr_base_scale=
    "sqrt"``; by default ``"sqrt"`` for optimizers whose name contains ``ada`` or ``lamb``
    (``adamw``, ``nadam``, ``adafactor``, ``lamb``, ...) and ``"linear"`` for the rest.
    ``global_batch_size`` is timm's batch size times world size times gradient-accumulation
    steps."""
    _check_float("lr_base", lr_base)
    _check_float("global_batch_size", global_batch_size, strict=True)
    _check_float("lr_base_size", lr_base_size, strict=True)
    if lr_base_scale not in (None, "", "linear", "sqrt"):
        raise ValueError(f"lr_base_scale must be 'linear' or 'sqrt', got {lr_base_scale!r}")
    batch_ratio = global_batch_size / lr_base_size
    if not lr_base_scale:
        on = opt.lower()
        lr_base_scale = "sqrt" if any(o in on for o in ("ada", "lamb")) else "linear"
    if lr_base_scale == "sqrt":
        batch_ratio = batch_ratio**0.5
    return lr_base * batch_ratio
