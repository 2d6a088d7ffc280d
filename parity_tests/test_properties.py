"""Property-based parity: hypothesis draws block configurations, shapes and modes."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import seres_jax as sj
from seres_jax.parity import compare_modules, randomize_batchnorm

from .helpers import HAVE_TORCH, assert_parity, nchw_input

if HAVE_TORCH:
    import seres_torch as st

pytestmark = pytest.mark.requires_torch

# The class of each style, by its name in both frameworks.
STYLES = {"postact": "SEResBlockPostAct", "preact": "SEResBlockPreAct"}
COMMON = dict(
    deadline=None,
    derandomize=True,  # the default suite is reproducible; `-m slow` explores more examples
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@hs.composite
def block_cases(draw: hs.DrawFn) -> dict:
    train = draw(hs.booleans())
    return dict(
        style=draw(hs.sampled_from(sorted(STYLES))),
        cin=draw(hs.sampled_from([3, 4, 8, 16])),
        cout=draw(hs.sampled_from([4, 8, 16])),
        stride=draw(hs.sampled_from([1, 2])),
        reduction=draw(hs.sampled_from([1, 2, 4, 16])),
        # Train mode on a batch of 1 at tiny sizes is ill-conditioned (see seres_jax.parity).
        batch=draw(hs.integers(2, 3) if train else hs.integers(1, 3)),
        h=draw(hs.integers(3, 13)),
        w=draw(hs.integers(3, 13)),
        train=train,
        seed=draw(hs.integers(0, 2**16)),
    )


def _check(case: dict, device: object) -> None:
    torch_cls, flax_cls = getattr(st, STYLES[case["style"]]), getattr(sj, STYLES[case["style"]])
    args = (case["cin"], case["cout"])
    kw = dict(stride=case["stride"], reduction=case["reduction"])
    tm = randomize_batchnorm(torch_cls(*args, **kw), seed=case["seed"])
    x = nchw_input((case["batch"], case["cin"], case["h"], case["w"]), seed=case["seed"])
    result = compare_modules(tm, flax_cls(*args, **kw), x, train=case["train"], device=device)
    assert_parity(result)


@settings(max_examples=6, **COMMON)
@given(case=block_cases())
def test_random_block_configurations(case, jax_device):
    _check(case, jax_device)


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("SERES_HYPOTHESIS_EXAMPLES", "150")), **COMMON)
@given(case=block_cases())
def test_random_block_configurations_extended(case, jax_device):
    _check(case, jax_device)
