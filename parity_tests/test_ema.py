"""``seres_jax.ema`` against timm's ``ModelEmaV3``.

``fixtures/record_timm_bce_ema.py`` changed a conv + BatchNorm + linear module's weights and
buffers along a seeded NumPy sequence for 100 updates and recorded the decays and the EMA's
final ``state_dict`` (``fixtures/timm_bce_ema.safetensors``). Here the same sequence, converted
with ``torch_to_flax``, goes through ``EmaConfig.update`` / ``ema_update`` inside
``lax.scan``: decays, weights and BatchNorm buffers equal timm's, the counter is copied (live
against timm too where it is installed). The first update copies, low-precision models and
bad hyper-parameters are handled.
"""

from __future__ import annotations

import dataclasses
import functools
import runpy
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from seres_jax.convert import torch_to_flax
from seres_jax.ema import EmaConfig, ema_decay, ema_update, init_ema
from seres_jax.parity import relative_error

from .helpers import WORST

FIXTURE = Path(__file__).parent / "fixtures" / "timm_bce_ema.safetensors"
SCRIPT = FIXTURE.with_name("record_timm_bce_ema.py")
# The script imports torch and timm only inside `record`: its NumPy sequence runs without them.
RECORDER = runpy.run_path(str(SCRIPT))
RUNS = tuple(RECORDER["EMA_RUNS"])


def _config(recorded: dict[str, np.ndarray], run: str) -> EmaConfig:
    fields = dict(zip(RECORDER["EMA_FIELDS"], recorded[f"ema/{run}/config"].tolist(), strict=True))
    fields["update_after_step"] = int(fields["update_after_step"])
    fields["use_warmup"] = bool(fields["use_warmup"])
    return EmaConfig(**fields)


def _timm_state(recorded: dict[str, np.ndarray], run: str) -> dict[str, Any]:
    prefix = f"ema/{run}/state/"
    return torch_to_flax({k[len(prefix) :]: v for k, v in recorded.items() if k.startswith(prefix)})


def _sequence(seed: int) -> tuple[Any, Any]:
    """The initial variables and the 100 updated ones stacked on a leading axis."""
    first, *rest = (torch_to_flax(state) for state in RECORDER["weight_sequence"](seed))
    return first, jax.tree.map(lambda *xs: np.stack(xs), *rest)


@functools.partial(jax.jit, static_argnums=2)
def _replay(initial: Any, updates: Any, config: EmaConfig) -> tuple[Any, Any]:
    """EMAs after every update: ``config.update`` and ``ema_update`` with ``ema_decay``."""

    def step(emas: tuple[Any, Any], x: tuple[jax.Array, Any]) -> tuple[tuple[Any, Any], None]:
        num_updates, new = x
        by_config, by_decay = emas
        decay = ema_decay(num_updates, **dataclasses.asdict(config))
        return (config.update(by_config, new, num_updates), ema_update(by_decay, new, decay)), None

    steps = jnp.arange(1, len(jax.tree.leaves(updates)[0]) + 1)
    ema = init_ema(initial)
    return jax.lax.scan(step, (ema, ema), (steps, updates))[0]


def _errors(ema: Any, timm: Any) -> dict[str, float]:
    weights = jax.tree.leaves(jax.tree.map(relative_error, ema["params"], timm["params"]))
    stats = {k: v for k, v in ema["batch_stats"]["bn"].items() if k != "num_batches_tracked"}
    timm_stats = {k: timm["batch_stats"]["bn"][k] for k in stats}
    buffers = jax.tree.leaves(jax.tree.map(relative_error, stats, timm_stats))
    return {"weights": max(weights), "buffers": max(buffers)}


def _check(recorded: dict[str, np.ndarray], seed: int) -> None:
    initial, updates = _sequence(seed)
    worst = WORST.setdefault("timm ModelEmaV3", {})
    for run in RUNS:
        config = _config(recorded, run)
        decays = jax.vmap(config.decay_at)(jnp.arange(1, 101))
        np.testing.assert_allclose(decays, recorded[f"ema/{run}/decays"], rtol=1e-6, atol=0)
        weights = jax.vmap(config.weight_at)(jnp.arange(1, 101))
        np.testing.assert_allclose(weights, 1 - recorded[f"ema/{run}/decays"], rtol=1e-6, atol=0)
        by_config, by_decay = _replay(initial, updates, config)
        timm = _timm_state(recorded, run)
        errors = _errors(by_config, timm)
        errors["decay"] = relative_error(decays, recorded[f"ema/{run}/decays"])
        for kind, err in errors.items():
            worst[kind] = max(worst.get(kind, 0.0), err)
        assert max(errors.values()) <= 1e-6, (run, errors)
        # A float32 decay near 1 rounds the weight 1 - decay (1.3e-5 relative at 0.998).
        assert max(_errors(by_decay, timm).values()) <= 2e-5, run
        counter = by_config["batch_stats"]["bn"]["num_batches_tracked"]
        assert counter.dtype == jnp.int32
        assert counter == timm["batch_stats"]["bn"]["num_batches_tracked"] == 100
        # timm averages the BatchNorm buffers too (exclude_buffers=False): not the last ones.
        last = jax.tree.map(lambda x: x[-1], updates)
        assert not np.allclose(timm["batch_stats"]["bn"]["mean"], last["batch_stats"]["bn"]["mean"])


def test_matches_recorded_timm():
    _check(load_file(str(FIXTURE)), seed=0)


def test_matches_live_timm():
    """The fixture is what the script records now, and another sequence matches too."""
    pytest.importorskip("timm")
    stored = {k: v for k, v in load_file(str(FIXTURE)).items() if k.startswith("ema/")}
    live = {k: v for k, v in RECORDER["record"]().items() if k.startswith("ema/")}
    assert live.keys() == stored.keys()
    for key, value in live.items():
        # Another torch build may round differently: to 1e-7 of the largest, NaN for NaN.
        atol = 1e-7 * np.nanmax(np.abs(stored[key]))
        np.testing.assert_allclose(value, stored[key], rtol=0, atol=atol, err_msg=key)
    _check(RECORDER["record"](seed=1), seed=1)


def test_python_float_decay_is_timms_weight():
    """With timm's decay as a Python float, ``ema_update`` lerps with timm's exact weight."""
    recorded = load_file(str(FIXTURE))
    initial, updates = _sequence(0)
    ema = init_ema(initial)
    update = jax.jit(ema_update, static_argnums=2)  # two compilations: decays 0, then 0.998
    for i, decay in enumerate(recorded["ema/plain/decays"].tolist()):
        ema = update(ema, jax.tree.map(lambda x, i=i: x[i], updates), decay)
    assert max(_errors(ema, _timm_state(recorded, "plain")).values()) <= 1e-6


def test_first_updates_copy():
    """Decay 0 until ``update_after_step + 1``: the EMA is then the model, bit for bit."""
    initial, updates = _sequence(0)
    config = EmaConfig(decay=0.99, update_after_step=2)
    ema = init_ema(initial)
    for step in (1, 2, 3):
        new = jax.tree.map(lambda x, s=step: x[s - 1], updates)
        assert config.decay_at(step) == 0 and config.weight_at(step) == 1
        ema = config.update(ema, new, step)
        jax.tree.map(np.testing.assert_array_equal, ema, new)
    assert config.decay_at(4) == np.float32(0.99)


def test_low_precision_model_float32_ema():
    """A float32 EMA of a bfloat16 model (timm's ``dtype=torch.float32``) stays float32 and
    follows timm's mixed-dtype ``mul_``/``add_`` path; a bfloat16 EMA stays bfloat16."""
    model = {"w": jnp.array([1.0, -2.0, 3.0], jnp.bfloat16), "n": jnp.array(7, jnp.int32)}
    ema = init_ema(model, dtype=jnp.float32)
    assert ema["w"].dtype == jnp.float32 and ema["n"].dtype == jnp.int32
    assert ema["w"].unsafe_buffer_pointer() != model["w"].unsafe_buffer_pointer()
    new = {"w": jnp.array([1.5, -2.5, 3.5], jnp.bfloat16), "n": jnp.array(8, jnp.int32)}
    out = ema_update(ema, new, 0.9)
    old, now = np.float32([1, -2, 3]), np.float32([1.5, -2.5, 3.5])
    expected = old * np.float32(0.9) + now * np.float32(1 - 0.9)
    np.testing.assert_allclose(out["w"], expected, rtol=1e-7, atol=0)
    assert out["n"] == 8 and out["n"].dtype == jnp.int32
    assert ema_update(model, new, 0.5)["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: EmaConfig(decay=1.5), r"decay must be in \[0, 1\], got 1.5"),
        (lambda: EmaConfig(decay=-0.1), r"decay must be in \[0, 1\], got -0.1"),
        (lambda: EmaConfig(min_decay=2.0), r"min_decay must be in \[0, 1\], got 2.0"),
        (lambda: EmaConfig(update_after_step=-1), r"update_after_step must be >= 0, got -1"),
        (lambda: EmaConfig(warmup_gamma=0.0), r"warmup_gamma must be > 0, got 0.0"),
        (lambda: ema_decay(5, decay=1.01), r"decay must be in \[0, 1\], got 1.01"),
        (lambda: ema_update({"w": jnp.ones(2)}, {"w": jnp.ones(2)}, 1.2), r"decay must be in"),
        (lambda: ema_update({"w": jnp.ones(2)}, {"w": jnp.ones(2)}, jnp.float32(-1)), r"decay"),
    ],
)
def test_bad_hyper_parameters_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
