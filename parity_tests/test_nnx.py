"""``seres_jax.nnx``: models built by name, weights moved between NNX, linen, PyTorch and
checkpoint files bit for bit (strictly, every problem named), and trained with ``nnx.Optimizer``
on a device mesh. Parity with PyTorch is ``test_registry``'s (``test_reduced_parity_nnx``),
``test_trajectory``'s and ``test_torch_reference``'s, run on the NNX models."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from seres_jax import nnx as snnx
from seres_jax import optim
from seres_jax.convert import ConversionError, flax_to_state_dict, torch_to_flax
from seres_jax.formats import CheckpointError, load_checkpoint
from seres_jax.parity import relative_error
from seres_jax.registry import RegistryError, build_flax, variables_template
from seres_jax.train import StepOptions, TrainState, make_mesh, train_step

from .helpers import HAVE_TORCH, run_json_script

if HAVE_TORCH:
    from seres_jax.registry import build_torch

TINY = "seresnet_tiny:in_ch=1,base=8,n=1,reduction=4"
ZOO = "seresnet50:layers=1-1-1-1,channels=8-16-32-64,num_classes=5"
LEGACY = "legacy_senet154:layers=1-1-1-1,channels=8-16-32-64,num_classes=5,cardinality=4"


def _state_dict(arch: str, dtype: np.dtype, seed: int = 0) -> dict[str, np.ndarray]:
    """A PyTorch-keyed state_dict of ``arch`` in ``dtype``: random weights and statistics
    (positive variances), counters, as numpy arrays (no torch needed)."""
    rng = np.random.default_rng(seed)
    template = variables_template(arch)
    shapes = flax_to_state_dict(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template))
    out = {}
    for key, zero in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = np.asarray(rng.integers(0, 1000), np.int64)
        else:
            value = rng.standard_normal(zero.shape)
            out[key] = (np.abs(value) + 0.1 if key.endswith("running_var") else value).astype(dtype)
    return out


def _bits_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray], ordered: bool = True) -> None:
    assert list(a) == list(b) if ordered else sorted(a) == sorted(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, key
        if x.dtype.kind == "f" or x.dtype.name == "bfloat16":
            assert np.array_equal(x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")), key
        else:
            assert int(x) == int(y), key


# ------------------------------------------------------------------------------- building


def test_create_model_is_the_registry_model_in_train_mode():
    model = snnx.create_model(TINY, rngs=nnx.Rngs(0))
    assert isinstance(model, snnx.SEResNetTiny)
    assert model.fc.kernel.shape == (32, 10)
    again = snnx.create_model(TINY, rngs=nnx.Rngs(0))  # the same draws from the same seed
    _bits_equal(snnx.to_state_dict(model, TINY), snnx.to_state_dict(again, TINY))
    assert model.stem[1].use_running_average is False  # NNX's and PyTorch's default
    model.eval()
    assert all(bn.use_running_average for _, bn in nnx.iter_modules(model)
               if isinstance(bn, snnx.BatchNorm))  # fmt: skip
    abstract = nnx.state(snnx.abstract_model(ZOO), nnx.Param)
    assert snnx.count_params(snnx.abstract_model(ZOO)) == sum(
        int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract)
    )


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("seresnet_huge", "unknown architecture 'seresnet_huge'"),
        ("seresnet_tiny:base=abc", "base must be an integer"),
        ("seresnet_tiny:width=3", "has no argument(s) width"),
        ("seresnext26d_32x4d:channels=1-2-4-8", "cannot be built: widths must be positive"),
    ],
)
def test_create_model_refuses_bad_architectures(arch, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        snnx.create_model(arch, rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    ("arch", "dtypes"),
    [(TINY, ("float32", "float16", "bfloat16")), (ZOO, ("bfloat16",)), (LEGACY, ("float16",))],
    ids=["tiny", "zoo", "legacy"],
)
def test_torch_to_nnx_to_torch_is_bit_exact(arch, dtypes):
    import ml_dtypes

    for name in dtypes:
        np_dtype = np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)
        state_dict = _state_dict(arch, np_dtype)
        model = snnx.from_torch(state_dict, arch)  # the dtype is the checkpoint's
        leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
        assert {leaf.dtype for leaf in leaves} == {np_dtype}
        _bits_equal(state_dict, snnx.to_state_dict(model, arch), ordered=False)


def test_linen_to_nnx_to_linen_is_bit_exact():
    variables = torch_to_flax(_state_dict(ZOO, np.dtype(np.float32)), variables_template(ZOO))
    back = snnx.to_linen(snnx.to_nnx(variables, ZOO), ZOO)
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    _bits_equal(flax_to_state_dict(variables), flax_to_state_dict(back))


def test_conversions_name_every_problem_and_build_nothing():
    state_dict = _state_dict(TINY, np.dtype(np.float32))
    del state_dict["stem.0.weight"]
    state_dict["fc.weight"] = np.zeros((3, 32), np.float32)
    state_dict["stage9.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ConversionError) as info:
        snnx.from_torch(state_dict, TINY)
    text = str(info.value)
    assert "3 problem(s)" in text
    for needle in ("missing: 'stem.0.weight'", "unexpected: 'stage9.0.conv1.weight'",
                   "'fc.weight' is (3, 32), model expects (10, 32)"):  # fmt: skip
        assert needle in text
    # A module of another architecture: every difference, in Flax's names.
    model = snnx.create_model(TINY, rngs=nnx.Rngs(0))
    with pytest.raises(ConversionError, match=r"to_linen: the module is not a seresnet_tiny:"):
        snnx.to_linen(model, "seresnet_tiny:in_ch=1,base=8,n=2,reduction=4")
    with pytest.raises(ConversionError, match="shape mismatch: params/fc/kernel"):
        snnx.to_nnx(snnx.to_linen(model), "seresnet_tiny:in_ch=1,base=8,n=1,num_classes=3")
    mixed = _state_dict(TINY, np.dtype(np.float32))
    mixed["fc.bias"] = mixed["fc.bias"].astype(np.float16)
    with pytest.raises(ConversionError, match="mix float16, float32: pass param_dtype="):
        snnx.from_torch(mixed, TINY)


@pytest.mark.requires_torch
def test_from_torch_takes_a_module_and_its_mode():
    torch_model = build_torch(TINY).eval()
    model = snnx.from_torch(torch_model, TINY)
    assert model.stem[1].use_running_average is True
    ours = flax_to_state_dict(snnx.to_linen(model, TINY), torch_model)  # in torch's order
    _bits_equal({k: v.numpy() for k, v in torch_model.state_dict().items()}, ours)


def test_checkpoint_files_both_ways(tmp_path):
    """An NNX model saves into the files ``seres convert``/``seres eval`` read, and loads from
    any of them (a linen run's orbax checkpoint included), bit for bit; nothing is replaced
    without ``force``."""
    reference = _state_dict(TINY, np.dtype(np.float32))
    model = snnx.from_torch(reference, TINY)
    for name in ("w.msgpack", "w.safetensors", "w.pt", "orbax_dir"):
        if name == "w.pt" and not HAVE_TORCH:
            continue
        snnx.save(model, tmp_path / name, TINY)
        data = load_checkpoint(tmp_path / name).to_state_dict(variables_template(TINY))
        _bits_equal(reference, data, ordered=False)
        _bits_equal(reference, snnx.to_state_dict(snnx.load(tmp_path / name, TINY)), ordered=False)
    before = (tmp_path / "w.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="exists"):
        snnx.save(snnx.create_model(TINY, rngs=nnx.Rngs(5)), tmp_path / "w.safetensors")
    assert (tmp_path / "w.safetensors").read_bytes() == before
    # A safetensors file of another model is refused, naming the entries.
    save_file(_state_dict(ZOO, np.dtype(np.float32)), tmp_path / "other.safetensors")
    with pytest.raises(ConversionError, match=re.escape("missing: 'stem.0.weight'")):
        snnx.load(tmp_path / "other.safetensors", TINY)
    assert set(load_file(tmp_path / "other.safetensors")) == set(_state_dict(ZOO, np.float32))


# ------------------------------------------------------------------------------- training


def _digits_batches(steps: int, batch: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    from seres_jax.data import load_digits, splits_from_arrays, train_dataset

    stream = train_dataset(splits_from_arrays(load_digits(seed=0)), batch, seed=3)
    return [stream[i] for i in range(steps)]


@pytest.mark.slow
def test_nnx_training_equals_linen_training():
    """The NNX step and the linen step, from the same weights on the same batches with the
    same optimizer and recipe (label smoothing, mixup), agree to float32 rounding."""
    variables = jax.device_get(build_flax(TINY).init(jax.random.key(3), jnp.zeros((1, 8, 8, 1))))
    tx = optim.sgd(0.05, momentum=0.9, weight_decay=5e-3, nesterov=True)
    options = StepOptions(label_smoothing=0.1, mixup=0.2, seed=4)
    state = TrainState.create(build_flax(TINY).apply, variables, tx)
    linen_step = jax.jit(train_step)
    model = snnx.to_nnx(variables, TINY)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    steps = snnx.compile_steps(make_mesh(jax.devices()[:1]))
    model, optimizer = steps.place(model, optimizer)
    for images, labels in _digits_batches(4):
        state, linen_metrics = linen_step(state, images, labels, options)
        model, optimizer, metrics = steps.train(model, optimizer, images, labels, options)
        assert abs(float(metrics["loss"]) - float(linen_metrics["loss"])) < 1e-6
    assert int(optimizer.step[...]) == 4
    ours, theirs = snnx.to_linen(model), jax.device_get(state.variables)
    worst = max(jax.tree.leaves(jax.tree.map(relative_error, ours, theirs)))
    assert worst < 1e-5, worst
    model.eval()
    images, labels = _digits_batches(1)[0]
    linen_eval = jax.jit(lambda v, x: build_flax(TINY).apply(v, x))(theirs, images)
    nnx_eval = steps.eval(model, images, labels, jnp.ones(len(labels)))
    assert float(nnx_eval["count"]) == len(labels)
    assert float(nnx_eval["correct"]) == float(np.sum(np.argmax(linen_eval, -1) == labels))


@pytest.mark.parametrize(
    "recipe",
    [
        dict(optimizer="lamb", weight_decay=0.02, clip_grad=1.0, clip_mode="agc"),
        pytest.param(
            dict(optimizer="lars", momentum=0.9, weight_decay=1e-4), marks=pytest.mark.slow
        ),
        pytest.param(
            dict(optimizer="rmsproptf", momentum=0.9, weight_decay=1e-5, clip_grad=0.5),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["lamb-agc", "lars", "rmsproptf-clip"],
)
def test_recipe_optimizers_update_an_nnx_model_as_linen_params(recipe):
    """``nnx.Optimizer`` over ``nnx.Param`` with seres' timm optimizers (their weight-decay
    masks and AGC's head exclusion read the NNX state's paths): the update the same optax
    transform makes on the linen parameters, bit for bit."""
    from seres_jax.train import TrainConfig

    config = TrainConfig(lr=0.01, **recipe)
    tx = optim.recipe_optimizer(config, optim.constant(0.01), 10)
    model = snnx.from_torch(_state_dict(TINY, np.dtype(np.float32)), TINY)
    params = snnx.to_linen(model)["params"]
    rng = np.random.default_rng(1)
    grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected = optax.apply_updates(params, updates)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    nnx_grads = nnx.state(snnx.to_nnx({**snnx.to_linen(model), "params": grads}, TINY), nnx.Param)
    optimizer.update(model, nnx_grads)
    got = snnx.to_linen(model)["params"]
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, got, jax.device_get(expected))))


def test_a_step_refuses_a_model_in_the_wrong_mode():
    model = snnx.from_torch(_state_dict(TINY, np.dtype(np.float32)), TINY)
    optimizer = nnx.Optimizer(model, optim.sgd(0.1), wrt=nnx.Param)
    images, labels = _digits_batches(1, batch=4)[0]
    model.eval()
    with pytest.raises(ValueError, match=r"train mode \(call model.train\(\) first\)"):
        snnx.train_step(model, optimizer, images, labels)
    model.train()
    with pytest.raises(ValueError, match=r"eval mode \(call model.eval\(\) first\)"):
        snnx.eval_step(model, images, labels, np.ones(4, np.float32))


MESH_SCRIPT = """
import json, sys
import jax, numpy as np, optax
import orbax.checkpoint as ocp
from flax import nnx
from seres_jax import nnx as snnx, optim
from seres_jax.data import load_digits, splits_from_arrays, train_dataset
from seres_jax.parity import relative_error
from seres_jax.train import StepOptions, make_mesh

assert len(jax.devices()) == 8, jax.devices()
arch = "seresnet_tiny:in_ch=1,base=8,n=1,reduction=4"
stream = train_dataset(splits_from_arrays(load_digits(seed=0)), 64, seed=1)
runs = {}
for n in (1, 8):
    model = snnx.create_model(arch, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optim.adamw(1e-3, weight_decay=0.05), wrt=nnx.Param)
    steps = snnx.compile_steps(make_mesh(jax.devices()[:n]))
    model, optimizer = steps.place(model, optimizer)
    losses = []
    for i in range(4):
        images, labels = jax.device_put(stream[i], steps.batch)
        model, optimizer, metrics = steps.train(model, optimizer, images, labels, 0.1)
        losses.append(float(metrics["loss"]))
    assert model.fc.kernel[...].sharding.num_devices == n
    runs[n] = (snnx.to_linen(model), losses)
    if n == 8:  # orbax keeps the sharded NNX state; a restore gives it back exactly
        path = sys.argv[1]
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(path, nnx.state(optimizer))
        abstract = nnx.state(nnx.eval_shape(
            lambda: nnx.Optimizer(snnx.create_model(arch, rngs=nnx.Rngs(9)),
                                  optim.adamw(1e-3, weight_decay=0.05), wrt=nnx.Param)))
        with ocp.StandardCheckpointer() as ckpt:
            restored = ckpt.restore(path, abstract)
        same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), restored,
                            nnx.state(optimizer))
        assert all(jax.tree.leaves(same))
(v1, l1), (v8, l8) = runs[1], runs[8]
print(json.dumps({
    "param_err": max(jax.tree.leaves(jax.tree.map(relative_error, v8, v1))),
    "loss_err": max(abs(a - b) / abs(b) for a, b in zip(l8, l1)),
}))
"""


def test_eight_devices_train_an_nnx_model_as_one(tmp_path):
    result = run_json_script(MESH_SCRIPT, str(tmp_path / "ckpt"), devices=8, timeout=300)
    print(result)
    assert result["loss_err"] < 1e-5 and result["param_err"] < 1e-5, result


def test_importing_seres_jax_nnx_starts_no_jax_backend():
    """A multi-host run calls ``jax.distributed.initialize`` before any JAX computation, so
    importing the package must not make an array (it did once: the initialiser's keys)."""
    import subprocess
    import sys

    code = (
        "import seres_jax.nnx, seres_jax.train; from jax._src import xla_bridge;"
        "assert not xla_bridge._backends, 'a JAX backend started at import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
