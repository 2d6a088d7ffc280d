"""The weight converter: naming rule, layouts, bit-exact round trips and strict-mode errors."""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import seres_jax as sj
from seres_jax.convert import (
    ConversionError,
    flax_path_to_torch_key,
    flax_to_state_dict,
    flax_to_torch,
    torch_key_to_flax_path,
    torch_to_flax,
)
from seres_jax.parity import randomize_batchnorm

from .helpers import HAVE_TORCH

if HAVE_TORCH:
    import torch

    import seres_torch as st

DTYPES = ("float32", "float16", "bfloat16")


def _tiny(preact=False):
    return st.SEResNetTiny(in_ch=3, base=8, n=2, reduction=4, preact=preact)


def _template(preact=False, dtype=jnp.float32):
    model = sj.SEResNetTiny(in_ch=3, base=8, n=2, reduction=4, preact=preact, param_dtype=dtype)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def _bits(t: torch.Tensor) -> np.ndarray:
    """A tensor's raw bytes as unsigned integers, so equality is bit equality (NaN, -0.0)."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(view).numpy()


@pytest.mark.parametrize(
    ("key", "ndim", "path"),
    [
        ("stage1.0.conv1.conv.weight", 4, ("params", "stage1_0", "conv1", "conv", "kernel")),
        ("stage2.1.se.fc.2.bias", 1, ("params", "stage2_1", "se", "fc_2", "bias")),
        ("stem.1.weight", 1, ("params", "stem_1", "scale")),
        ("head.0.running_var", 1, ("batch_stats", "head_0", "var")),
        ("proj.1.num_batches_tracked", 0, ("batch_stats", "proj_1", "num_batches_tracked")),
        ("fc.weight", 2, ("params", "fc", "kernel")),
        ("a.0.1.weight", 4, ("params", "a_0_1", "kernel")),
    ],
)
def test_naming_rule_both_ways(key, ndim, path):
    assert torch_key_to_flax_path(key, ndim) == path
    assert flax_path_to_torch_key(path, ndim) == key


@pytest.mark.requires_torch
def test_layouts_conv_dense_bn():
    sd = _tiny().state_dict()
    v = torch_to_flax(sd)
    k = sd["stage2.0.conv1.conv.weight"]  # OIHW
    np.testing.assert_array_equal(
        v["params"]["stage2_0"]["conv1"]["conv"]["kernel"], k.permute(2, 3, 1, 0).numpy()
    )
    np.testing.assert_array_equal(v["params"]["fc"]["kernel"], sd["fc.weight"].T.numpy())
    np.testing.assert_array_equal(v["params"]["stem_1"]["scale"], sd["stem.1.weight"].numpy())
    np.testing.assert_array_equal(
        v["batch_stats"]["stem_1"]["mean"], sd["stem.1.running_mean"].numpy()
    )


@pytest.mark.requires_torch
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("preact", [False, True], ids=["post", "pre"])
def test_torch_flax_torch_is_bit_exact(dtype, preact):
    model = randomize_batchnorm(_tiny(preact), seed=1).to(getattr(torch, dtype))
    sd = model.state_dict()
    variables = torch_to_flax(sd, _template(preact, jnp.dtype(dtype)))
    back = flax_to_torch(variables, model)
    assert list(back) == list(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype, key
        assert back[key].shape == value.shape, key
        np.testing.assert_array_equal(_bits(back[key]), _bits(value), err_msg=key)


@pytest.mark.requires_torch
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_flax_torch_flax_is_bit_exact(dtype):
    model = sj.SEResNetTiny(in_ch=3, base=8, n=1, reduction=4, preact=True)
    x = jax.random.normal(jax.random.key(1), (4, 9, 9, 3))
    torch_model = st.SEResNetTiny(in_ch=3, base=8, n=1, reduction=4, preact=True)
    variables = torch_to_flax(torch_model.state_dict())
    # A train step makes the running stats and the batch count non-trivial.
    train_apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    _, updates = train_apply(variables, x)
    variables = {"params": variables["params"], **updates}
    variables = jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, variables
    )
    back = torch_to_flax(flax_to_torch(variables), variables)
    flat_in = jax.tree_util.tree_leaves_with_path(variables)
    flat_out = dict(jax.tree_util.tree_leaves_with_path(back))
    assert len(flat_in) == len(flat_out)
    for path, leaf in flat_in:
        out = flat_out[path]
        assert out.dtype == leaf.dtype and out.shape == leaf.shape, path
        raw = np.asarray(leaf)
        np.testing.assert_array_equal(
            out.reshape(-1).view(np.uint8),
            raw.reshape(-1).view(np.uint8),
            err_msg=jax.tree_util.keystr(path),
        )


@pytest.mark.requires_torch
def test_num_batches_tracked_round_trips_and_counts_in_train_mode():
    model = _tiny()
    sd = model.state_dict()
    sd["stem.1.num_batches_tracked"].fill_(123456)
    v = torch_to_flax(sd)
    assert v["batch_stats"]["stem_1"]["num_batches_tracked"].dtype == np.int32
    back = flax_to_torch(v)
    assert back["stem.1.num_batches_tracked"].dtype == torch.int64
    assert int(back["stem.1.num_batches_tracked"]) == 123456
    fm = sj.SEResNetTiny(in_ch=3, base=8, n=2, reduction=4)
    train_apply = jax.jit(functools.partial(fm.apply, train=True, mutable=["batch_stats"]))
    _, upd = train_apply(v, jnp.ones((2, 8, 8, 3)))
    assert int(upd["batch_stats"]["stem_1"]["num_batches_tracked"]) == 123457


@pytest.mark.requires_torch
def test_numpy_state_dict_converts_like_tensors():
    sd = randomize_batchnorm(_tiny()).state_dict()
    from_numpy = torch_to_flax({k: v.numpy() for k, v in sd.items()})
    from_torch = torch_to_flax(sd)
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_numpy, from_torch)
    numpy_back = flax_to_state_dict(from_numpy)
    assert all(isinstance(v, np.ndarray) for v in numpy_back.values())
    for key, value in sd.items():
        np.testing.assert_array_equal(numpy_back[key], value.numpy())


@pytest.mark.requires_torch
def test_results_do_not_share_memory_with_the_source():
    sd = _tiny().state_dict()
    v = torch_to_flax(sd)
    sd["stem.1.weight"].fill_(7.0)
    assert not np.any(v["params"]["stem_1"]["scale"] == 7.0)


@pytest.mark.requires_torch
def test_strict_mode_lists_every_missing_extra_and_misshaped_key():
    sd = dict(_tiny().state_dict())
    del sd["stage1.0.se.fc.0.bias"]
    del sd["head.0.running_var"]
    sd["stage9.0.conv1.conv.weight"] = torch.zeros(8, 8, 3, 3)
    sd["fc.weight"] = torch.zeros(11, 32)
    sd["stem.1.bias"] = torch.zeros(8, dtype=torch.float64)
    with pytest.raises(ConversionError) as info:
        torch_to_flax(sd, _template())
    problems = info.value.problems
    text = str(info.value)
    assert len(problems) == 5, text
    for needle in [
        "missing: 'stage1.0.se.fc.0.bias' (model expects (4,) float32)",
        "missing: 'head.0.running_var' (model expects (32,) float32)",
        "unexpected: 'stage9.0.conv1.conv.weight' (8, 8, 3, 3) float32",
        "shape mismatch: 'fc.weight' is (11, 32), model expects (10, 32)",  # PyTorch's layout
        "dtype mismatch: 'stem.1.bias' is float64, model expects float32",
    ]:
        assert needle in text, text


@pytest.mark.requires_torch
def test_strict_flax_to_torch_lists_every_problem():
    model = _tiny()
    variables = torch_to_flax(model.state_dict())
    del variables["params"]["fc"]["bias"]
    variables["params"]["stem_0"]["kernel"] = np.zeros((3, 3, 3, 9), np.float32)
    variables["batch_stats"]["extra"] = {"mean": np.zeros(3, np.float32)}
    with pytest.raises(ConversionError) as info:
        flax_to_torch(variables, model)
    text = str(info.value)
    assert len(info.value.problems) == 3, text
    assert "missing: 'fc.bias'" in text
    assert "shape mismatch: params/stem_0/kernel -> 'stem.0.weight' is (9, 3, 3, 3)" in text
    assert "unexpected: batch_stats/extra/mean -> 'extra.running_mean'" in text


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    ("key", "value", "message"),
    # Values are made in the test: collecting this module must not need torch.
    [
        ("stem.0.scale", lambda: torch.zeros(3), "unknown leaf 'scale'"),
        ("weight", lambda: torch.zeros(3), "needs a module path"),
        ("0.weight", lambda: torch.zeros(3), "cannot start with a sequence index"),
        ("stem_0.weight", lambda: torch.zeros(3), "ends in _<digits>"),
        ("stem.1.running_mean", lambda: torch.zeros(3, 1), "must have rank 1"),
        ("stem.1.num_batches_tracked", lambda: torch.tensor(2**40), "does not fit in int32"),
        ("stem.1.num_batches_tracked", lambda: torch.tensor(1.5), "must be an integer"),
        ("stem.0.weight", lambda: torch.zeros(3, 3, dtype=torch.int64), "floating-point"),
        ("stem.0.weight", lambda: np.array([object()] * 2), "floating-point"),
        ("stem.0.weight", lambda: "not a tensor", "not an array"),
        ("stem.0.weight", lambda: torch.tensor(1.0), "cannot be a scalar"),
    ],
)
def test_unmappable_entries_are_rejected_by_name_without_template(key, value, message):
    sd = {"fc.bias": torch.zeros(2), key: value()}
    with pytest.raises(ConversionError) as info:
        torch_to_flax(sd)
    assert len(info.value.problems) == 1
    assert repr(key) in info.value.problems[0] and message in info.value.problems[0]


@pytest.mark.requires_torch
def test_all_unmappable_entries_are_reported_together():
    sd = {"a.b": torch.zeros(1), "c.d": torch.zeros(1), "ok.weight": torch.zeros(2, 2)}
    with pytest.raises(ConversionError) as info:
        torch_to_flax(sd)
    assert [p.split(":")[0] for p in info.value.problems] == ["'a.b'", "'c.d'"]


def test_unknown_flax_leaves_are_rejected():
    with pytest.raises(ConversionError, match="params/m/embedding"):
        flax_to_state_dict({"params": {"m": {"embedding": np.zeros((2, 2), np.float32)}}})
    with pytest.raises(ConversionError, match="intermediates/m/out"):
        flax_to_state_dict({"intermediates": {"m": {"out": np.zeros(2, np.float32)}}})


@pytest.mark.requires_torch
def test_template_orders_the_output_like_torch():
    model = randomize_batchnorm(_tiny(preact=True))
    variables = jax.jit(lambda v: v)(torch_to_flax(model.state_dict()))  # jit sorts dict keys
    assert list(flax_to_torch(variables, model)) == list(model.state_dict())
    assert list(flax_to_torch(variables, model.state_dict())) == list(model.state_dict())


@pytest.mark.requires_torch
def test_bfloat16_values_survive_torch_to_flax():
    t = torch.tensor([1.0, -2.5, 3.140625, float("inf")], dtype=torch.bfloat16)
    v = torch_to_flax({"bn.weight": t})
    assert v["params"]["bn"]["scale"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(v["params"]["bn"]["scale"].astype(np.float32), t.float().numpy())


def test_importing_seres_jax_does_not_import_torch():
    code = (
        "import sys, seres_jax, seres_jax.convert, seres_jax.models, seres_jax.train;"
        "import seres_jax.data, seres_jax.optim, seres_jax.registry, seres_jax.formats;"
        "import numpy as np;"
        "v = seres_jax.torch_to_flax({'fc.weight': np.zeros((2, 3), np.float32)});"
        "seres_jax.flax_to_state_dict(v);"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
