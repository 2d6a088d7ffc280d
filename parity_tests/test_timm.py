"""Compatibility with timm itself: timm's models load into seres_torch and seres_jax and
compute the same thing, and timm → Flax → timm round-trips bit-exactly.

Runs whenever timm is importable (docs/zoo.md, "Testing against timm itself", shows that
environment) and is skipped otherwise. Reduced widths by default; full-size models behind
``-m slow``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from seres_jax import resnet as jr
from seres_jax.convert import flax_to_torch, torch_to_flax
from seres_jax.parity import compare_modules, kink_free_input, randomize_batchnorm

from .helpers import HAVE_TORCH, assert_as_accurate_as_torch, assert_parity, nchw_input

if HAVE_TORCH:
    import torch

    from seres_torch import resnet as tr

pytestmark = pytest.mark.requires_torch

timm = pytest.importorskip(
    "timm", reason="timm is not installed (it needs a torchvision matching torch; see docs/zoo.md)"
)

REDUCED = dict(channels=(16, 32, 64, 128), stem_width=8, num_classes=10, layers=(1, 1, 1, 1))
# timm's pruned models read their widths from its files: full size only (JAX behind -m slow).
PRUNED = sorted(name for name, zoo in tr.ZOO.items() if zoo.get("block_widths"))
# Every other zoo model at reduced width and depth (4 groups where grouped), and the image side
# its stride pattern takes: timm's anti-aliased models need every stage's input even.
CASES = {
    name: (
        REDUCED
        | ({"cardinality": 4} if zoo.get("cardinality", 1) > 1 else {})
        | ({"base_width": 16} if zoo.get("block_reduce_first", 1) > 1 else {}),
        64 if zoo.get("aa_layer") else 35,
    )
    for name, zoo in tr.ZOO.items()
    if name not in PRUNED
}


def _timm_model(name: str, **kwargs: object) -> torch.nn.Module:
    return randomize_batchnorm(timm.create_model(name, pretrained=False, **kwargs), seed=4)


@pytest.mark.parametrize("name", sorted(CASES) + PRUNED)
def test_timm_weights_run_in_seres_torch_unchanged(name):
    kwargs, side = CASES.get(name, ({}, 35))
    reference = _timm_model(name, **kwargs)
    ours = tr.create_model(name, **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.from_numpy(nchw_input((2, 3, side, side), seed=1))
    for train in (False, True):
        reference.train(train)
        ours.train(train)
        torch.testing.assert_close(ours(x.clone()), reference(x.clone()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_timm_weights_run_in_seres_jax(name, train):
    kwargs, side = CASES[name]
    reference = _timm_model(name, **kwargs)
    flax_model = jr.create_model(name, **kwargs)
    shapes = jax.eval_shape(flax_model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))
    variables = torch_to_flax(reference.state_dict(), shapes)  # strict
    x = kink_free_input(reference, (2, 3, side, side))
    result = compare_modules(reference, flax_model, x, train=train, variables=variables)
    assert_parity(result, label="fp32 vs timm")


@pytest.mark.parametrize("name", sorted(jr.ZOO))
def test_timm_state_dict_round_trips_bit_exactly(name):
    reference = timm.create_model(name, pretrained=False)
    state = reference.state_dict()
    back = flax_to_torch(torch_to_flax(state), reference)
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    reference.load_state_dict(back, strict=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "shape"),
    [(name, (4, 3, 96, 96)) for name in ("seresnet50", "seresnext50_32x4d", "seresnext26d_32x4d")]
    # The deepest, at a small input.
    + [(name, (2, 3, 64, 64)) for name in ("seresnet200d", "seresnet269d", "ecaresnet269d",
                                           "senet154", "seresnextaa201d_32x8d", *PRUNED)],
)  # fmt: skip
def test_full_size_timm_parity(name, shape):
    """Full size, 50 layers deep and more: float32 rounding compounds far past the small models'
    gates (PyTorch float32 vs float64 differ by up to ~5e-2 in some gradients of a randomly
    initialised SE-ResNet-50), so JAX float32 is measured against PyTorch float64 and must be
    about as accurate as PyTorch float32 is: within 10x its error (plus 1e-6)."""
    reference = _timm_model(name)
    x = nchw_input(shape, seed=3)
    assert_as_accurate_as_torch(reference, jr.create_model(name), x)
