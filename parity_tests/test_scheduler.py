"""``seres_jax.scheduler`` against timm's learning-rate schedulers.

Every recorded combination (``fixtures/timm_schedulers.json``, by
``fixtures/record_timm_schedulers.py``; re-recorded live where timm is installed): the same
epoch count as timm's ``create_scheduler_v2``, and at every update of timm's ``train.py``
loop the same lr, within 1e-7 relative from the jitted float32 schedule and exactly from
the host's float64 replica; the plateau scheduler from the same metrics, resumed from a
saved state too. Then timm's lr scaling, the arguments refused, and the schedules driving
optax optimizers inside ``jit``.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seres_jax import optim
from seres_jax.scheduler import (
    SCHEDULER_NAMES,
    LRSchedule,
    PlateauLR,
    cosine_lr,
    create_scheduler,
    multistep_lr,
    poly_lr,
    scale_lr,
    step_lr,
    tanh_lr,
)

from .helpers import WORST

FIXTURE = Path(__file__).parent / "fixtures" / "timm_schedulers.json"
SCRIPT = FIXTURE.with_name("record_timm_schedulers.py")
RTOL = 1e-7  # float32 rounding of timm's float64 lr is at most 2**-24 = 6e-8
RECORDED = json.loads(FIXTURE.read_text())


def _build(case: dict[str, Any]) -> LRSchedule:
    return create_scheduler(case["lr"], **case["kwargs"])


def _plateau_lrs(schedule: LRSchedule, metrics: list[float | None]) -> list[float]:
    """The plateau lr of every update, driven as timm's ``train.py`` drives it."""
    plateau = schedule.plateau
    assert plateau is not None and schedule.schedule is None
    lrs = []
    for epoch in range(schedule.num_epochs):
        lrs += [plateau.lr] * schedule.updates_per_epoch
        plateau.step(epoch + 1, metrics[epoch])
    return [*lrs, plateau.lr]


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.where(theirs == 0, 1.0, np.abs(theirs))
    return float(np.max(np.abs(ours - theirs) / scale))


def _check_cases(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Our schedules of recorded cases equal timm's; the worst relative error of the float32
    lr per scheduler."""
    built, evaluated = [_build(case) for case in cases], {}
    for case, schedule in zip(cases, built, strict=True):
        assert schedule.num_epochs == case["num_epochs"], case["name"]
        assert len(case["lrs"]) == schedule.total_updates + 1, case["name"]
        assert schedule.initial_lr == case["lrs"][0], case["name"]
        if "metrics" in case:
            host = _plateau_lrs(schedule, case["metrics"])
            assert host == case["lrs"], case["name"]  # the same float64 arithmetic
            evaluated[case["name"]] = np.float32(host)
        else:
            host = [schedule.lr_at(u) for u in range(len(case["lrs"]))]
            assert host == case["lrs"], case["name"]  # the transcription is timm's code
    # Every jitted schedule at every update of its run, in one compiled program.
    jitted = {c["name"]: (s.schedule, len(c["lrs"])) for c, s in zip(cases, built, strict=True)}
    jitted = {name: pair for name, pair in jitted.items() if pair[0] is not None}
    evaluated |= jax.jit(lambda: {n: f(jnp.arange(length)) for n, (f, length) in jitted.items()})()
    worst: dict[str, float] = {}
    for case in cases:
        ours = evaluated[case["name"]]
        assert ours.dtype == np.float32, case["name"]
        err = _relative(ours, np.asarray(case["lrs"]))
        assert err <= RTOL, f"{case['name']}: {err:.2e} relative"
        sched = case["kwargs"]["sched"]
        worst[sched] = max(worst.get(sched, 0.0), err)
    return worst


def test_matches_recorded_timm_schedules():
    worst = WORST.setdefault("timm lr schedulers (per update)", {})
    for sched, err in _check_cases(RECORDED["cases"]).items():
        worst[sched] = max(worst.get(sched, 0.0), err)
    # The fixture exercises every scheduler, stepping on epochs and on updates.
    recorded = {case["kwargs"]["sched"] for case in RECORDED["cases"]}
    assert recorded == set(SCHEDULER_NAMES)
    modes = {(c["kwargs"]["sched"], c["kwargs"].get("step_on_epochs")) for c in RECORDED["cases"]}
    assert len(modes) == 2 * len(SCHEDULER_NAMES) - 1  # plateau steps on epochs only


def test_matches_live_timm():
    """The fixture is what the script records with the timm installed here."""
    pytest.importorskip("timm")
    live = json.loads(json.dumps(runpy.run_path(str(SCRIPT))["record"]()))
    assert live["cases"] == RECORDED["cases"]
    assert live["errors"] == RECORDED["errors"]
    assert live["scale_lr"] == RECORDED["scale_lr"]


def test_surprising_timm_epoch_counts():
    """timm's ``num_epochs``: cooldown counts for cyclic schedules only, a warmup prefix for
    every one (plateau's too, though it ignores the prefix)."""
    counts = {case["name"]: case["num_epochs"] for case in RECORDED["cases"]}
    assert counts["cosine-cooldown"] == 13 and counts["step-cooldown"] == 10
    assert counts["none"] == 12 and counts["plateau-skipped-evals"] == 11
    assert counts["cosine-cycle-mul-k-decay"] == 19  # floor(5 + 6.5 + 8.45)


def test_plateau_resumes_from_saved_state():
    """Half a run, the state through JSON into a fresh scheduler, the rest: timm's lrs."""
    case = next(c for c in RECORDED["cases"] if c["name"] == "plateau-skipped-evals")
    schedule = _build(case)
    first = schedule.plateau
    assert first is not None
    metrics, per = case["metrics"], schedule.updates_per_epoch
    lrs, half = [], schedule.num_epochs // 2
    for epoch in range(half):
        lrs += [first.lr] * per
        first.step(epoch + 1, metrics[epoch])
    saved = json.loads(json.dumps(first.state_dict()))
    second = _build(case).plateau
    assert second is not None
    second.load_state_dict(saved)
    for epoch in range(half, schedule.num_epochs):
        lrs += [second.lr] * per
        second.step(epoch + 1, metrics[epoch])
    assert [*lrs, second.lr] == case["lrs"]
    with pytest.raises(ValueError, match="lacks"):
        second.load_state_dict({"lr": 0.1})


def test_scale_lr_matches_timm():
    for row in RECORDED["scale_lr"]:
        got = scale_lr(
            row["lr_base"], row["global_batch_size"], lr_base_size=row["lr_base_size"],
            lr_base_scale=row["lr_base_scale"] or None, opt=row["opt"],
        )  # fmt: skip
        assert got == row["lr"], row
    with pytest.raises(ValueError, match="lr_base_scale"):
        scale_lr(0.1, 512, lr_base_scale="log")
    with pytest.raises(ValueError, match="global_batch_size"):
        scale_lr(0.1, 0)


def test_refuses_what_timm_fails_on():
    assert all(row["error"] for row in RECORDED["errors"])  # timm did fail on each
    for row in RECORDED["errors"]:
        with pytest.raises(ValueError):
            create_scheduler(row["lr"], **row["kwargs"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sched="cosine_annealing"), "unknown scheduler 'cosine_annealing'"),
        (dict(num_epochs=0), "num_epochs"),
        (dict(num_epochs=-5), "num_epochs"),
        (dict(num_epochs=10.5), "num_epochs"),
        (dict(updates_per_epoch=0), "updates_per_epoch"),
        (dict(warmup_epochs=-1), "warmup_epochs"),
        (dict(cooldown_epochs=-1), "cooldown_epochs"),
        (dict(warmup_epochs=10), "warmup_epochs=10 >= num_epochs=10"),
        (dict(sched="step", warmup_epochs=12), "warmup_epochs=12 >= num_epochs"),
        (dict(decay_rate=0.0), "decay_rate"),
        (dict(decay_rate=-0.5), "decay_rate"),
        (dict(sched="step", decay_rate=1.5), "decay_rate"),
        (dict(sched="step", decay_epochs=-2), "decay_epochs"),
        (dict(sched="multistep", decay_milestones=[6, 3]), "increasing"),
        (dict(sched="multistep", decay_milestones=[-1, 3]), "milestone"),
        (dict(min_lr=-1e-5), "min_lr"),
        (dict(warmup_lr=-1e-5, warmup_epochs=2), "warmup_lr"),
        (dict(warmup_lr=float("nan"), warmup_epochs=2), "warmup_lr"),
        (dict(cycle_mul=0.0), "cycle_mul"),
        (dict(cycle_decay=-0.1, cycle_limit=2), "cycle_decay"),
        (dict(cycle_limit=0), "cycle_limit"),
        (dict(k_decay=0.0), "k_decay"),
        (dict(sched="plateau", plateau_mode="up"), "plateau_mode"),
        (dict(sched="plateau", patience_epochs=-1), "patience_epochs"),
        (dict(sched="plateau", decay_rate=1.0), "decay_rate"),
        (dict(sched="plateau", step_on_epochs=False), "epochs only"),
        (dict(sched="poly", decay_rate=0.0), "decay_rate"),
    ],
)
def test_validation(kwargs: dict[str, Any], match: str):
    arguments = {"num_epochs": 10, "updates_per_epoch": 7, **kwargs}
    with pytest.raises(ValueError, match=match):
        create_scheduler(0.1, **arguments)


def test_validation_of_the_schedules():
    with pytest.raises(ValueError, match="lr must be"):
        cosine_lr(-0.1, 10)
    with pytest.raises(ValueError, match="t_initial"):
        tanh_lr(0.1, 0)
    with pytest.raises(ValueError, match="lb < ub"):
        tanh_lr(0.1, 10, lb=3.0, ub=-7.0)
    with pytest.raises(ValueError, match="power"):
        poly_lr(0.1, 10, power=-1.0)
    with pytest.raises(ValueError, match="decay_t"):
        step_lr(0.1, 0)
    with pytest.raises(ValueError, match="updates_per_epoch"):
        multistep_lr(0.1, [3], updates_per_epoch=0)
    with pytest.raises(ValueError, match="mode"):
        PlateauLR(0.1, mode="best")
    with pytest.raises(ValueError, match="more than"):  # cycles of 2**25 updates
        cosine_lr(0.1, 2**23, cycle_limit=4)
    with pytest.raises(ValueError, match="plateau"):
        create_scheduler(0.1, sched="plateau", num_epochs=5, updates_per_epoch=3).lr_at(3)


def test_schedules_are_the_factorys():
    """The per-scheduler functions (timm's class arguments, times in scheduler steps) give
    what the factory gives for the recorded cases they stand for."""
    per = 7
    pairs = [
        ("cosine-cycles/updates", cosine_lr(
            0.2, 28, cycle_limit=3, cycle_decay=0.5, warmup_t=7, warmup_lr_init=1e-3,
            t_in_epochs=False, updates_per_epoch=per)),
        ("tanh-warmup", tanh_lr(
            0.1, 10, lr_min=1e-5, warmup_t=2, warmup_lr_init=1e-4, updates_per_epoch=per)),
        ("poly-k-decay/updates", poly_lr(
            0.1, 70, power=0.5, k_decay=1.5, t_in_epochs=False, updates_per_epoch=per)),
        ("step-warmup", step_lr(
            0.1, 2.4, decay_rate=0.97, warmup_t=2, warmup_lr_init=1e-4, warmup_prefix=False,
            updates_per_epoch=per)),
        ("multistep-warmup-prefix/updates", multistep_lr(
            0.1, [7, 28], decay_rate=0.5, warmup_t=14, warmup_lr_init=1e-5,
            t_in_epochs=False, updates_per_epoch=per)),
    ]  # fmt: skip
    for name, schedule in pairs:
        case = next(c for c in RECORDED["cases"] if c["name"] == name)
        ours = jax.jit(schedule)(jnp.arange(len(case["lrs"])))
        assert _relative(ours, np.asarray(case["lrs"])) <= RTOL, name


def test_long_runs_match_timm_arithmetic():
    """Beyond the recorded 10 epochs: long per-update runs (a step interval of 1502.4
    updates, a cycle of 31 300) equal timm's float64 arithmetic at every update and far
    past the run (where cyclic schedules hold timm's ``lr_min``)."""
    runs = [
        dict(sched="step", num_epochs=20, decay_epochs=2.4, decay_rate=0.97, warmup_epochs=3),
        dict(sched="cosine", num_epochs=50, warmup_epochs=2, min_lr=1e-6, cooldown_epochs=2),
        dict(sched="multistep", num_epochs=50, decay_milestones=[10, 30, 45], warmup_epochs=1),
    ]
    for kwargs in runs:
        schedule = create_scheduler(0.3, **kwargs, updates_per_epoch=626, step_on_epochs=False)
        assert schedule.schedule is not None
        updates = np.asarray([*range(schedule.total_updates + 1), 10**6, 10**8, 2**30])
        ours = jax.jit(schedule.schedule)(jnp.asarray(updates))
        theirs = np.asarray([schedule.lr_at(int(u)) for u in updates])
        assert _relative(ours, theirs) <= RTOL, kwargs
    cosine = create_scheduler(0.3, num_epochs=5, min_lr=1e-4, updates_per_epoch=3)
    assert cosine.schedule is not None
    assert cosine.schedule(2**31 - 1) == np.float32(1e-4) == np.float32(cosine.lr_at(10**6))


def test_schedules_drive_optax_in_jit():
    """A schedule as an optimizer's learning_rate, read at the update count inside the
    jitted update: SGD on a loss with gradient 1 moves the parameter by minus the sum of
    timm's lrs. A plateau lr enters the same compiled update as a hyperparameter set once
    per epoch."""
    case = next(c for c in RECORDED["cases"] if c["name"] == "cosine-warmup/updates")
    schedule = _build(case)
    tx = optim.sgd(schedule.schedule)
    params = jnp.zeros(())
    state = tx.init(params)

    @jax.jit
    def update(params: jax.Array, state: optax.OptState) -> tuple[jax.Array, optax.OptState]:
        updates, state = tx.update(jnp.ones(()), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(schedule.total_updates):
        params, state = update(params, state)
    expected = -np.sum(np.float32(case["lrs"][:-1]), dtype=np.float64)
    np.testing.assert_allclose(params, expected, rtol=1e-5)

    case = next(c for c in RECORDED["cases"] if c["name"] == "plateau-max")
    schedule = _build(case)
    plateau = schedule.plateau
    assert plateau is not None
    # Only the lr is injected (a traced value): the optimizer's other arguments stay static.
    tx = optax.inject_hyperparams(lambda learning_rate: optim.sgd(learning_rate))(
        learning_rate=plateau.lr
    )
    state = tx.init(jnp.zeros(()))
    traces = 0

    @jax.jit
    def step(state: optax.OptState) -> tuple[jax.Array, optax.OptState]:
        nonlocal traces
        traces += 1
        updates, state = tx.update(jnp.ones(()), state, jnp.zeros(()))
        return updates, state

    used = []
    for epoch in range(schedule.num_epochs):
        for _ in range(schedule.updates_per_epoch):
            updates, state = step(state)
            used.append(-float(updates))
        lr = plateau.step(epoch + 1, case["metrics"][epoch])
        state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    assert traces == 1
    assert _relative(np.asarray(used), np.asarray(case["lrs"][:-1])) <= RTOL
