"""``seres_jax.mixup`` against timm's batch-mode Mixup/CutMix.

With ``lam`` and the box fixed, outputs equal timm's, recorded in
``fixtures/timm_mixup.safetensors`` by ``fixtures/record_timm_mixup.py`` (and live where timm
is installed); the ``jax.random`` draws follow timm's distributions; with both alphas 0 the
batch passes unchanged; the batch may be sharded over devices.
"""

from __future__ import annotations

import runpy
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file

from seres_jax.losses import cross_entropy, soft_cross_entropy
from seres_jax.mixup import (
    MixDraw,
    MixupConfig,
    box_lam,
    cut_box,
    draw_mix,
    mix_batch,
    mix_images,
    mixup_target,
)

from .helpers import run_json_script

FIXTURE = Path(__file__).parent / "fixtures" / "timm_mixup.safetensors"
SCRIPT = FIXTURE.with_name("record_timm_mixup.py")
NUM_CLASSES = 5  # the recorded batch's


def _check_calls(recorded: dict[str, np.ndarray]) -> None:
    """``mix_images`` and ``mixup_target`` given timm's ``lam``, choice and centre give timm's
    images and targets."""
    x, labels = jnp.asarray(recorded["calls/x"]), jnp.asarray(recorded["calls/labels"])
    height, width = x.shape[1:3]
    calls = sorted({k.split("/")[1] for k in recorded if k.count("/") == 2})
    assert len(calls) == 6
    for i in calls:
        lam, use_cutmix, smoothing = recorded[f"calls/{i}/params"].tolist()
        box = cut_box(*recorded[f"calls/{i}/centre"], height, width, lam)
        if use_cutmix:
            lam = box_lam(box, height, width)
        draw = MixDraw(jnp.float32(lam), jnp.bool_(use_cutmix), box)
        mixed, target = mix_images(x, draw), mixup_target(labels, NUM_CLASSES, lam, smoothing)
        np.testing.assert_allclose(mixed, recorded[f"calls/{i}/mixed"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(target, recorded[f"calls/{i}/target"], rtol=0, atol=1e-6)


def _check_boxes(recorded: dict[str, np.ndarray]) -> None:
    """``cut_box`` around timm's centre is timm's box; ``box_lam`` its corrected ``lam``."""
    height, width, cy, cx, *box = recorded["boxes/table"].T
    ours = jax.vmap(cut_box)(cy, cx, height, width, recorded["boxes/lam"].astype(np.float32))
    np.testing.assert_array_equal(np.stack(ours), np.stack(box))
    lam = jax.vmap(box_lam)(ours, height, width)
    np.testing.assert_allclose(lam, recorded["boxes/corrected_lam"], rtol=0, atol=1e-6)
    # The table covers clipping at every border and empty boxes (lam = 1).
    y_lo, y_hi, x_lo, x_hi = box
    assert (y_lo == 0).any() and (y_hi == height).any() and (x_lo == 0).any()
    assert (x_hi == width).any() and (y_hi == y_lo).any()


def test_matches_recorded_timm_outputs():
    recorded = load_file(str(FIXTURE))
    _check_calls(recorded)
    _check_boxes(recorded)


def test_matches_live_timm():
    """The fixture is what the script records now, and other draws match too."""
    pytest.importorskip("timm")
    record = runpy.run_path(str(SCRIPT))["record"]
    stored = load_file(str(FIXTURE))
    live = record()
    assert live.keys() == stored.keys()
    for key, value in live.items():
        np.testing.assert_array_equal(value, stored[key], err_msg=key)
    other = record(seed=1)
    _check_calls(other)
    _check_boxes(other)


_draws = jax.jit(jax.vmap(draw_mix, in_axes=(0, None, None, None)), static_argnums=(1, 2))


def _draw_many(config: MixupConfig, n: int = 20_000) -> MixDraw:
    return jax.device_get(_draws(jax.random.split(jax.random.key(0), n), 8, 8, config))


def test_mixup_lam_follows_beta():
    draws = _draw_many(MixupConfig(mixup_alpha=0.8))
    a = 0.8  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(draws.lam.mean() - 0.5) < 0.01
    assert abs(draws.lam.var() - 1 / (4 * (2 * a + 1))) < 0.004
    assert not draws.use_cutmix.any()


def test_switch_prob_and_corrected_lam():
    draws = _draw_many(MixupConfig(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.3))
    assert abs(draws.use_cutmix.mean() - 0.3) < 0.015
    cut = jax.tree.map(lambda a: a[draws.use_cutmix], draws)
    np.testing.assert_allclose(cut.lam, jax.vmap(box_lam, (0, None, None))(cut.box, 8, 8))
    only_cutmix = _draw_many(MixupConfig(cutmix_alpha=1.0))
    assert only_cutmix.use_cutmix.all()


def test_prob_leaves_batches_unmixed():
    draws = _draw_many(MixupConfig(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.6))
    unmixed = (draws.lam == 1.0) & ~draws.use_cutmix
    assert abs(unmixed.mean() - 0.4) < 0.015
    # CutMix with lam near 1 cuts nothing (under a pixel); timm's lam is then 1 as well.
    empty = jax.tree.map(lambda a: a[(draws.lam == 1.0) & draws.use_cutmix], draws.box)
    np.testing.assert_array_equal((empty.y_hi - empty.y_lo) * (empty.x_hi - empty.x_lo), 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_zero_alphas_pass_the_batch_through(dtype):
    images = jax.random.normal(jax.random.key(1), (6, 5, 7, 3), dtype)
    labels = jnp.array([0, 3, 1, 3, 2, 4])
    mix = jax.jit(mix_batch, static_argnums=3)
    config = MixupConfig(label_smoothing=0.1)
    for step in range(3):
        mixed, targets, lam = mix(jax.random.key(step), images, labels, 5, config)
        assert mixed.dtype == dtype
        np.testing.assert_array_equal(mixed, images)
        expected = optax.smooth_labels(jax.nn.one_hot(labels, 5), 0.1)
        np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-7)
        assert lam == 1.0
    compiled = mix._cache_size()
    # The alphas are traced: mixing takes the same compiled step.
    mixed, targets, lam = mix(jax.random.key(0), images, labels, 5, MixupConfig(1.0, 1.0))
    assert lam < 1 and not np.array_equal(mixed, images)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    assert mix._cache_size() == compiled


def test_odd_batch_is_refused():
    with pytest.raises(ValueError, match="even batch size, got 3"):
        jax.jit(mix_batch, static_argnums=3)(
            jax.random.key(0), jnp.zeros((3, 4, 4, 1)), jnp.zeros(3, int), 2, MixupConfig()
        )


def test_soft_cross_entropy():
    logits = jax.random.normal(jax.random.key(2), (8, 5), jnp.bfloat16) * 3
    labels = jnp.array([0, 1, 2, 3, 4, 0, 1, 2])
    one_hot = jax.nn.one_hot(labels, 5)
    loss = soft_cross_entropy(logits, one_hot)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, cross_entropy(logits, labels), rtol=1e-6)
    smooth = soft_cross_entropy(logits, optax.smooth_labels(one_hot, 0.1))
    np.testing.assert_allclose(smooth, cross_entropy(logits, labels, 0.1), rtol=1e-6)
    # d/dlogits = (softmax - targets) / batch.
    targets = jnp.full((8, 5), 0.2)
    logits = logits.astype(jnp.float32)
    grad = jax.grad(soft_cross_entropy)(logits, targets)
    np.testing.assert_allclose(grad, (jax.nn.softmax(logits) - targets) / 8, atol=1e-7)


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from seres_jax.mixup import MixupConfig, mix_batch

    assert len(jax.devices()) == 8, jax.devices()
    images = jax.random.normal(jax.random.key(0), (16, 9, 6, 3))
    labels = jnp.arange(16) % 10
    mix = jax.jit(mix_batch, static_argnums=3)
    configs = [MixupConfig(0.8, 1.0, switch_prob=s, label_smoothing=0.1) for s in (0.0, 1.0)]
    runs = {}
    for n in (1, 8):
        batch = NamedSharding(Mesh(np.asarray(jax.devices()[:n]), ("data",)),
                              PartitionSpec("data"))
        x, y = jax.device_put(images, batch), jax.device_put(labels, batch)
        outs = [mix(jax.random.key(k), x, y, 10, c) for k in range(4) for c in configs]
        assert all(o[0].sharding.num_devices == n for o in outs)
        runs[n] = jax.device_get(outs)
    diffs = [[float(np.abs(a - b).max()) for a, b in zip(o1, o8)]
             for o1, o8 in zip(runs[1], runs[8])]
    print(json.dumps({"max_diff": np.max(diffs, axis=0).tolist(),
                      "lams": [float(o[2]) for o in runs[8]]}))
    """
)


def test_eight_devices_match_one_device():
    report = run_json_script(SHARDED_SCRIPT, devices=8, timeout=300)
    images, targets, lam = report["max_diff"]
    assert images == lam == 0.0, report
    # XLA fuses the sharded program's target arithmetic otherwise: float32 rounding only.
    assert targets < 1e-7, report
    assert all(lam < 1 for lam in report["lams"])  # Mixup and CutMix both ran
