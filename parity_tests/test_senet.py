"""The SENet authors' models (timm's ``senet.py``, ``legacy_*``): keys, shapes and counts of every
model against timm's record, parity of each structural family at reduced size in both modes,
full size behind ``-m slow``, and timm itself where it is importable."""

from __future__ import annotations

import gzip
import json
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seres_jax as sj
from seres_jax import senet as js
from seres_jax.convert import check_state_dict, flax_to_torch, torch_to_flax
from seres_jax.parity import FP32_TOL, compare_modules, randomize_batchnorm

from .helpers import HAVE_TORCH, assert_as_accurate_as_torch, nchw_input

if HAVE_TORCH:
    import torch

    from seres_torch import count_params
    from seres_torch import senet as ts

FIXTURE = Path(__file__).parent / "fixtures" / "timm_zoo.json.gz"
TIMM = json.loads(gzip.decompress(FIXTURE.read_bytes()))["models"]
NAMES = sorted(js.LEGACY_ZOO)
# One case per structural family, for timm's own models below. Reduced eval/train parity of
# every legacy model runs in test_registry.py (one per distinct reduced network).
SMALL = dict(channels=(16, 32, 64, 128), layers=(1, 1, 1, 1), num_classes=10, drop_rate=0.0)
FAMILIES = {
    "legacy_seresnet18": SMALL,
    "legacy_seresnet50": SMALL,
    "legacy_seresnext26_32x4d": dict(SMALL, cardinality=4),
    "legacy_senet154": dict(SMALL, cardinality=4),
}
# 35: the stem gives 18×18, which the ceil-mode max-pool covers with an overhanging window.
IMAGE = 35


class _Entry(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype


def test_fixture_covers_the_legacy_zoo():
    assert set(NAMES) <= set(TIMM)
    assert TIMM["legacy_senet154"]["params"] == 115_088_984


@pytest.mark.parametrize("name", NAMES)
def test_flax_layout_matches_timm(name):
    """Torch-free: timm's keys, shapes and dtypes convert strictly onto the Flax model."""
    shapes = jax.eval_shape(
        js.create_model(name).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3))
    )
    assert sj.count_params(shapes) == TIMM[name]["params"]
    entries = {k: _Entry(tuple(s), np.dtype(d)) for k, s, d in TIMM[name]["state_dict"]}
    check_state_dict(entries, shapes)  # every key, shape and dtype, nothing extra


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", NAMES)
def test_torch_layout_matches_timm(name):
    with torch.device("meta"):  # shapes only: no 115M-parameter initialisation
        model = ts.create_model(name)
    ours = [
        [k, list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in model.state_dict().items()
    ]
    assert ours == TIMM[name]["state_dict"]  # same keys, in timm's order, shapes and dtypes
    assert count_params(model) == TIMM[name]["params"]


@pytest.mark.requires_torch
def test_definitions_mirror_each_other():
    assert ts.LEGACY_ZOO == js.LEGACY_ZOO
    assert list(ts.BLOCKS) == list(js.BLOCKS)
    for name, block in ts.BLOCKS.items():
        assert block.__name__ == js.BLOCKS[name].__name__
        if hasattr(block, "widths"):
            assert block.widths(64, 4) == js.BLOCKS[name].widths(64, 4)
            assert block.stride_first == js.BLOCKS[name].stride_first


@pytest.mark.requires_torch
def test_the_authors_function_where_it_differs_from_the_resnet_family():
    with torch.device("meta"):
        model, senet = ts.create_model("legacy_seresnet50"), ts.create_model("legacy_senet154")
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert model.pool0.ceil_mode and model.pool0.padding == 0
    assert senet.layer2[0].conv2.stride == (2, 2)
    assert senet.layer1[0].downsample[0].kernel_size == (1, 1)  # layer1 projects with a 1×1
    assert senet.layer2[0].downsample[0].kernel_size == (3, 3)
    assert senet.layer2[0].downsample[0].padding == (1, 1)
    # The squeeze width is channels // 16, not timm's make_divisible(channels / 16, 8) (they
    # agree on the published widths): 24 channels squeeze to 1, not 2.
    block = ts.SEResNetBlock(24, 24)
    assert block.se_module.fc1.out_channels == 1
    variables = jax.eval_shape(
        js.SEResNetBlock(24, 24).init, jax.random.key(0), jnp.zeros((1, 4, 4, 24))
    )
    assert variables["params"]["se_module"]["fc1"]["kernel"].shape == (1, 1, 24, 1)


@pytest.mark.requires_torch
@pytest.mark.parametrize("size", range(3, 12))
def test_ceil_mode_max_pool(size):
    x = nchw_input((1, 2, size, size + 1), seed=size)
    want = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)(torch.from_numpy(x)).numpy()
    got = np.asarray(js.max_pool_ceil(jnp.asarray(x.transpose(0, 2, 3, 1))))
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), want)


def test_dropout_in_train_mode_draws_from_the_dropout_stream():
    kw = dict(block="basic", layers=(1, 1, 1, 1), channels=(16, 16, 16, 16), num_classes=4)
    x = jnp.asarray(nchw_input((4, 8, 8, 3), seed=1))
    shapes = jax.eval_shape(js.SENet(**kw).init, jax.random.key(0), x)
    variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype), shapes)

    @partial(jax.jit, static_argnums=0)
    def train_logits(rate: float, key: jax.Array) -> jax.Array:
        model = js.SENet(**kw, drop_rate=rate)
        rngs = {"dropout": key}
        return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)[0]

    key = jax.random.key(1)
    assert not np.allclose(train_logits(0.5, key), train_logits(0.0, key))


@pytest.mark.slow
@pytest.mark.requires_torch
@pytest.mark.parametrize("name", ["legacy_senet154", "legacy_seresnet152"])
def test_full_size_parity(name):
    """The deepest two at full size: JAX float32 held to PyTorch float32's own error."""
    tm = randomize_batchnorm(ts.create_model(name, drop_rate=0.0), seed=3)
    x = nchw_input((2, 3, 67, 67), seed=1)
    assert_as_accurate_as_torch(tm, js.create_model(name, drop_rate=0.0), x)


# --------------------------------------------------------------------------- timm itself


def _timm():  # the timm module, or the test skips
    return pytest.importorskip(
        "timm", reason="timm is not installed (see docs/zoo.md, testing against timm)"
    )


# timm's SENet has no width arguments: its depth is reduced instead.
SHALLOW = dict(layers=(1, 1, 1, 1), num_classes=10, drop_rate=0.0)


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_timm_weights_run_in_both_frameworks(name, train):
    """timm's model and weights: seres_torch computes exactly what timm does (outputs, and so
    gradients), the Flax model its logits and running statistics. Gradients are gated at
    reduced width (``test_reduced_parity``): at timm's full width a pre-ReLU value within
    float32 rounding of zero is likely somewhere (legacy_senet154 here: 1.2e-6 in layer2),
    and which side of the kink it lands on moves a gradient by up to ~1e-1."""
    timm = _timm()
    reference = randomize_batchnorm(timm.create_model(name, pretrained=False, **SHALLOW), seed=4)
    ours = ts.create_model(name, **SHALLOW)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = nchw_input((2, 3, IMAGE, IMAGE), seed=1)
    reference.train(train)
    ours.train(train)
    want = reference(torch.from_numpy(x))
    torch.testing.assert_close(ours(torch.from_numpy(x)), want, rtol=0, atol=0)
    flax_model = js.create_model(name, **SHALLOW)
    shapes = jax.eval_shape(flax_model.init, jax.random.key(0), jnp.zeros((1, IMAGE, IMAGE, 3)))
    variables = torch_to_flax(reference.state_dict(), shapes)  # strict
    result = compare_modules(reference, flax_model, x, train=train, variables=variables)
    assert result.output <= FP32_TOL.output
    assert max(result.running_stats.values(), default=0.0) <= FP32_TOL.running_stats


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", NAMES)
def test_timm_state_dict_round_trips_bit_exactly(name):
    reference = _timm().create_model(name, pretrained=False)
    state = reference.state_dict()
    template = jax.eval_shape(
        js.create_model(name).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3))
    )
    back = flax_to_torch(torch_to_flax(state, template), reference)
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    reference.load_state_dict(back, strict=True)


def test_seres_train_draws_dropout_masks_for_the_legacy_models(tmp_path):
    """timm's legacy models keep drop_rate=0.2: the train step gives them a dropout key, drawn
    from the seed and the step, so two runs agree bit for bit."""
    from seres_cli.main import main
    from seres_jax.formats import load_checkpoint

    arch = "legacy_seresnet18:channels=16-32-64-128,layers=1-1-1-1,inplanes=16"
    argv = ["train", "--model", arch, "--dataset", "synthetic", "--batch-size", "8",
            "--max-steps", "2", "--no-progress", "--workdir"]  # fmt: skip
    for run in ("a", "b"):
        assert main([*argv, str(tmp_path / run)]) == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoints").to_variables()
    b = load_checkpoint(tmp_path / "b" / "checkpoints").to_variables()
    jax.tree.map(np.testing.assert_array_equal, a, b)
