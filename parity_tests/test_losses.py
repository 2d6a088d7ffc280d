"""``seres_jax.losses.binary_cross_entropy`` against timm's ``BinaryCrossEntropy``.

Loss and gradient wrt the logits equal timm's, recorded in ``fixtures/timm_bce_ema.safetensors``
by ``fixtures/record_timm_bce_ema.py`` (and live where timm is installed), on integer labels
and on mixup's soft targets, for every option; bfloat16 logits give a float32 loss; bad
options are refused.
"""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from seres_jax.losses import binary_cross_entropy
from seres_jax.mixup import mixup_target
from seres_jax.parity import relative_error

from .helpers import WORST

FIXTURE = Path(__file__).parent / "fixtures" / "timm_bce_ema.safetensors"
SCRIPT = FIXTURE.with_name("record_timm_bce_ema.py")
# The script imports torch and timm only inside `record`.
RECORDER = runpy.run_path(str(SCRIPT))


def _options(recorded: dict[str, np.ndarray], case: str) -> tuple[np.ndarray, dict]:
    smoothing, threshold, sum_classes, weight, mixed = recorded[f"bce/{case}/params"].tolist()
    targets = recorded["bce/mixed_target"] if mixed else recorded["bce/labels"]
    pos_weight = (None, RECORDER["SCALAR_POS_WEIGHT"], recorded["bce/pos_weight"])[int(weight)]
    options = dict(
        smoothing=smoothing,
        target_threshold=None if math.isnan(threshold) else threshold,
        sum_classes=bool(sum_classes),
        pos_weight=pos_weight,
    )
    return targets, options


def _check(recorded: dict[str, np.ndarray]) -> None:
    """Loss and ``jax.grad`` match timm's in every recorded case; ``mixup_target`` gives the
    mixed targets timm's ``mixup_target`` gave."""
    lam, smoothing = recorded["bce/mix_params"].tolist()
    labels, logits = recorded["bce/labels"], recorded["bce/logits"]
    ours = mixup_target(jnp.asarray(labels), logits.shape[-1], lam, smoothing)
    np.testing.assert_allclose(ours, recorded["bce/mixed_target"], rtol=0, atol=1e-7)
    cases = sorted(
        {k.split("/")[1] for k in recorded if k.startswith("bce/") and k.count("/") == 2}
    )
    assert len(cases) == len(RECORDER["BCE_CASES"])
    worst = WORST.setdefault("timm BinaryCrossEntropy", {})
    for case in cases:
        targets, options = _options(recorded, case)
        loss, grad = jax.jit(
            jax.value_and_grad(lambda x, t, o=options: binary_cross_entropy(x, t, **o))
        )(logits, targets)
        errors = {
            "loss": relative_error(loss, recorded[f"bce/{case}/loss"]),
            "grad": relative_error(grad, recorded[f"bce/{case}/grad"]),
        }
        for kind, err in errors.items():
            worst[kind] = max(worst.get(kind, 0.0), err)
        assert loss.dtype == jnp.float32 and loss.shape == ()
        assert max(errors.values()) <= 1e-6, (case, options, errors)


def test_matches_recorded_timm():
    _check(load_file(str(FIXTURE)))


def test_matches_live_timm():
    """The fixture is what the script records now, and other draws match too."""
    pytest.importorskip("timm")
    record = RECORDER["record"]
    stored = {k: v for k, v in load_file(str(FIXTURE)).items() if k.startswith("bce/")}
    live = {k: v for k, v in record().items() if k.startswith("bce/")}
    assert live.keys() == stored.keys()
    for key, value in live.items():
        # Another torch build may round differently: to 1e-7 of the largest, NaN for NaN.
        atol = 1e-7 * np.nanmax(np.abs(stored[key]))
        np.testing.assert_allclose(value, stored[key], rtol=0, atol=atol, err_msg=key)
    _check(record(seed=1))


def test_smoothing_and_threshold_may_be_traced():
    """One compiled loss serves every smoothing and threshold; the result is the host one's."""
    recorded = load_file(str(FIXTURE))
    logits, labels = recorded["bce/logits"], recorded["bce/labels"]
    loss = jax.jit(lambda x, y, s, t: binary_cross_entropy(x, y, smoothing=s, target_threshold=t))
    for smoothing, threshold in ((0.1, 0.01), (0.3, 0.5)):  # off 0.02 > 0.01: all 1
        expected = binary_cross_entropy(
            logits, labels, smoothing=smoothing, target_threshold=threshold
        )
        np.testing.assert_allclose(loss(logits, labels, smoothing, threshold), expected, rtol=1e-7)
    assert loss._cache_size() == 1


def test_bfloat16_logits_give_a_float32_loss():
    recorded = load_file(str(FIXTURE))
    logits = jnp.asarray(recorded["bce/logits"], jnp.bfloat16)
    targets = recorded["bce/mixed_target"]
    loss, grad = jax.value_and_grad(binary_cross_entropy)(logits, targets)
    assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
    # Computed in float32 from the rounded logits: nothing more is lost.
    assert loss == binary_cross_entropy(logits.astype(jnp.float32), targets)


def test_saturated_logits_stay_finite():
    logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 88.0]])
    loss, grad = jax.value_and_grad(binary_cross_entropy)(logits, jnp.array([1, 0]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    # Four elements wrong by 1e4, one by 88, one at x = 0 (log 2): no overflow, no NaN.
    np.testing.assert_allclose(loss, (4e4 + 88 + math.log(2)) / 6, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(smoothing=1.0), r"smoothing must be in \[0, 1\), got 1.0"),
        (dict(smoothing=-0.1), r"smoothing must be in \[0, 1\), got -0.1"),
        (dict(target_threshold=1.5), r"target_threshold must be in \[0, 1\], got 1.5"),
        (dict(target_threshold=-0.2), r"target_threshold must be in \[0, 1\], got -0.2"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        binary_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1]), **options)


def test_mis_shaped_targets_are_refused():
    with pytest.raises(ValueError, match=r"targets must be class ids of shape \(2,\)"):
        binary_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
