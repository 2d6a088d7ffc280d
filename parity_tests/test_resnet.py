"""The timm-layout SE-ResNet / SE-ResNeXt zoo: counts, keys and parity (reduced widths in the
default suite, full size behind ``-m slow``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seres_jax as sj
from seres_jax import resnet as jr
from seres_jax.convert import check_state_dict, flax_to_torch, torch_to_flax
from seres_jax.parity import (
    compare_modules,
    kink_free_input,
    randomize_batchnorm,
    relu_margin,
)

from .helpers import (
    HAVE_TORCH,
    assert_as_accurate_as_torch,
    assert_parity,
    nchw_input,
    torch_bf16_error,
)

if HAVE_TORCH:
    import torch

    from seres_torch import count_params
    from seres_torch import resnet as tr

pytestmark = pytest.mark.requires_torch

# timm's own key names, shapes and dtypes of each model (1000 classes), recorded from
# `timm.create_model(name).state_dict()` by fixtures/record_timm_zoo.py (with the legacy_*
# SENets of test_senet.py).
FIXTURE = json.loads(
    gzip.decompress((Path(__file__).parent / "fixtures" / "timm_zoo.json.gz").read_bytes())
)
TIMM = FIXTURE["models"]
# Reduced widths and depth keep each family's structure (block type, groups, stem, shortcut,
# anti-aliasing, attention, pruning); a 2-block first stage adds an identity-shortcut block.
SMALL = dict(channels=(16, 32, 64, 128), stem_width=8, num_classes=10, layers=(1, 1, 1, 1))
DEEPER = dict(SMALL, layers=(2, 1, 1, 1))
# A pruned model's per-block widths at that size: conv1, conv2 narrower than 16/32/64/128 and
# each stage's output narrower than 4x.
PRUNED = ((11, 5, 13), (14, 9, 13), (21, 17, 50), (40, 29, 97), (90, 77, 230))
# (constructor overrides, image side): odd sides (35) exercise the ceil-mode average-pool
# shortcut against the stride-2 convolutions; timm's anti-aliased models need every stage's
# input even (their floor-mode pool would not meet the ceil-mode shortcut), so 64.
# test_registry.py runs every zoo model at the SMALL size in the default suite (one per
# distinct reduced network); these are the structures that size leaves out.
SMALL_CASES: dict[str, tuple[dict, int]] = {
    "ecaresnet50d_pruned": (dict(DEEPER, block_widths=PRUNED), 35),
    "seresnextaa101d_32x8d": (dict(DEEPER, cardinality=4), 64),
    # Every option of the basic block at once (no timm model combines them).
    "seresnet18-options": (
        dict(SMALL, stem_type="deep_tiered", aa_layer="avg", block_reduce_first=2,
             down_kernel_size=3, attn="eca"),
        64,
    ),
}  # fmt: skip


def test_zoo_definitions_mirror_each_other():
    assert tr.ZOO == jr.ZOO


def test_fixture_covers_the_zoo():
    assert set(tr.ZOO) == {name for name in TIMM if not name.startswith("legacy_")}
    assert TIMM["seresnet50"]["params"] == 28_088_024
    assert len(TIMM["seresnet50"]["state_dict"]) == 384


@pytest.mark.parametrize("name", sorted(jr.ZOO))
def test_keys_shapes_and_counts_match_timm(name):
    with torch.device("meta"):  # shapes and dtypes only: no weights drawn
        model = tr.create_model(name)
    ours = [
        [k, list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in model.state_dict().items()
    ]
    assert ours == TIMM[name]["state_dict"]  # same keys, in timm's order, same shapes and dtypes
    assert count_params(model) == TIMM[name]["params"]
    flax_model = jr.create_model(name)
    shapes = jax.eval_shape(flax_model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert sj.count_params(shapes) == TIMM[name]["params"]
    # Strict, as torch_to_flax checks timm's state_dict: every key, shape and dtype.
    declared = {k: SimpleNamespace(shape=tuple(shape), dtype=np.dtype(dtype))
                for k, shape, dtype in TIMM[name]["state_dict"]}  # fmt: skip
    check_state_dict(declared, shapes)


def test_seresnet50_key_layout():
    keys = list(tr.create_model("seresnet50").state_dict())
    assert keys[:2] == ["conv1.weight", "bn1.weight"]
    for key in ["layer1.0.se.fc1.weight", "layer1.0.se.fc2.bias", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.running_var", "layer4.2.bn3.num_batches_tracked",
                "fc.weight"]:  # fmt: skip
        assert key in keys
    assert tr.create_model("seresnet50").state_dict()["layer1.0.se.fc1.weight"].shape == (
        16,
        256,
        1,
        1,
    )  # make_divisible(256 / 16, 8)
    d_keys = tr.create_model("seresnext26d_32x4d").state_dict()
    assert "conv1.6.weight" in d_keys and "layer2.0.downsample.1.weight" in d_keys
    assert "layer2.0.downsample.0.weight" not in d_keys  # index 0 is the average pool


def test_zero_init_last_bn_in_both():
    model = tr.create_model("seresnet18", **SMALL)
    assert torch.all(model.layer1[0].bn2.weight == 0)
    assert torch.all(model.layer1[0].bn1.weight == 1)
    for block, last in ((jr.BasicBlock(8, 8), "bn2"), (jr.Bottleneck(8, 2), "bn3")):
        key = jax.random.key(0, impl="rbg")  # threefry's init compiles slowly on the CPU
        params = jax.jit(block.init)(key, jnp.zeros((1, 4, 4, 8)))["params"]
        assert np.all(np.asarray(params[last]["scale"]) == 0)
        assert np.all(np.asarray(params["bn1"]["scale"]) == 1)


def _check_reduced(case, train, device):
    name = case.split("-")[0]
    kwargs, side = SMALL_CASES[case]
    tm = randomize_batchnorm(tr.create_model(name, **kwargs), seed=5)
    fm = jr.create_model(name, **kwargs)
    x = kink_free_input(tm, (2, 3, side, side))
    assert_parity(compare_modules(tm, fm, x, train=train, device=device))


def test_parity_inputs_stay_off_relu_kinks():
    side = 35
    tm = randomize_batchnorm(tr.create_model("seresnet50t", **SMALL), seed=5)
    before = {key: value.clone() for key, value in tm.state_dict().items()}
    # The input these tests once drew: a ReLU input at 1e-7 of its layer's largest, where JAX
    # float32 landed on the other side of the kink (gradients 4e-2 apart).
    assert relu_margin(tm, nchw_input((2, 3, side, side), seed=2), train=True) < 1e-6
    x = kink_free_input(tm, (2, 3, side, side))
    assert min(relu_margin(tm, x, train=train) for train in (False, True)) >= 1e-6
    assert all(torch.equal(tm.state_dict()[key], value) for key, value in before.items())
    with pytest.raises(ValueError, match="no input among seeds"):
        kink_free_input(tm, (2, 3, side, side), seeds=range(2, 3))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", sorted(SMALL_CASES))
def test_reduced_zoo_parity(case, train, jax_device):
    _check_reduced(case, train, jax_device)


def test_round_trip_loads_strictly_into_torch():
    model = randomize_batchnorm(tr.create_model("seresnext26d_32x4d", **SMALL), seed=1)
    back = flax_to_torch(torch_to_flax(model.state_dict()), model)
    fresh = tr.create_model("seresnext26d_32x4d", **SMALL)
    fresh.load_state_dict(back, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "shape"),
    [("seresnet50", (4, 3, 96, 96)), ("seresnext26d_32x4d", (4, 3, 96, 96))]
    # The deepest, at a small input.
    + [(name, (2, 3, 64, 64)) for name in ("seresnet200d", "seresnet269d", "ecaresnet269d",
                                           "senet154", "seresnextaa201d_32x8d")],
)  # fmt: skip
def test_full_size_parity(name, shape):
    """Full size: held to PyTorch's own float32 accuracy against float64 (see test_timm)."""
    tm = randomize_batchnorm(tr.create_model(name), seed=3)
    x = nchw_input(shape, seed=1)
    assert_as_accurate_as_torch(tm, jr.create_model(name), x)


@pytest.mark.parametrize("channels", [64, 256, 2048])
def test_se_module_parity(channels, jax_device):
    tm, fm = tr.SEModule(channels), jr.SEModule(channels)
    assert (
        tm.fc1.out_channels
        == jr.make_divisible(channels / 16, 8)
        == tr.make_divisible(channels / 16, 8)
    )
    x = nchw_input((2, channels, 3, 5), seed=channels)
    assert_parity(compare_modules(tm, fm, x, train=False, device=jax_device))


def test_bfloat16_compute_with_float32_parameters():
    """The TPU setting: bfloat16 compute, float32 parameters and statistics. Through a deep
    network bfloat16 gradients stray far more than SEResNetTiny's bounds (PyTorch's own
    autocast: ~0.3 on the input gradient here), so JAX bfloat16 is held to PyTorch bfloat16's
    accuracy: within 2x its error against the same float32 reference."""
    kw = dict(SMALL, cardinality=4)
    tm = randomize_batchnorm(tr.create_model("seresnext26d_32x4d", **kw), seed=5)
    fm = jr.create_model("seresnext26d_32x4d", dtype=jnp.bfloat16, **kw)
    x = nchw_input((2, 3, 64, 64), seed=6)
    ours = compare_modules(tm, fm, x, train=False).worst()
    theirs = torch_bf16_error(tm, x)
    for kind, err in theirs.items():
        assert ours[kind] <= 2 * err + 1e-3, (kind, ours[kind], err)
    variables = torch_to_flax(tm.state_dict())
    _, updates = jax.jit(lambda v, x: fm.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, jnp.ones((2, 32, 32, 3))
    )
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(updates)}
    assert dtypes == {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}


def test_registry_builds_the_zoo_for_the_cli():
    from seres_jax.registry import build_torch, variables_template

    template = variables_template("seresnet50:num_classes=10")
    assert sj.count_params(template) == 26_059_514  # 28,088,024 - 2048 * 990 - 990
    assert type(build_torch("seresnext26d_32x4d:num_classes=10")).__name__ == "SEResNet"
