"""Every registered architecture (``seres_jax.registry.MODELS``), tested the same way: its
classes by import path, ``init`` (abstract here: the conversion template; concrete at full size
behind ``-m slow``), a strict conversion round trip and eval/train parity at reduced sizes, of
the linen model and of its NNX twin. A new registration is covered without a new test."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from seres_jax import nnx as snnx
from seres_jax.convert import flax_to_torch, torch_to_flax
from seres_jax.layers import count_params
from seres_jax.parity import compare_modules, randomize_batchnorm
from seres_jax.registry import (
    MODELS,
    build_flax,
    build_torch,
    model_config,
    random_variables,
    variables_template,
)

from .helpers import HAVE_TORCH, assert_parity, image_shape, reduced_arguments, reduced_case

if HAVE_TORCH:
    import torch

NAMES = sorted(MODELS)


def _reduced_structure(name: str) -> tuple[str, str]:
    spec, arguments = model_config(name, **reduced_arguments(name))
    return spec.flax_path, repr(sorted(arguments.items()))


# At reduced size many names are one network (seresnet50, 101 and 152 all have one block a
# stage): the default suite runs the init, round trip and parity checks once per distinct
# reduced network (22 for the 44 names), under the first name that builds it; every name
# runs behind `-m slow`.
_FIRST: dict[tuple[str, str], str] = {}
for _name in NAMES:
    _FIRST.setdefault(_reduced_structure(_name), _name)
HEAVY = [n if n in _FIRST.values() else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
# Initialisation is the class's own code: one name per class, and seresnet50 for the zoo's SE
# (its first name is an ECA model).
_CLASSES = {MODELS[n].flax_path: n for n in reversed(NAMES)}
INIT = [n if n in (*_CLASSES.values(), "seresnet50") else pytest.param(n, marks=pytest.mark.slow)
        for n in NAMES]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_registry_names_both_classes_by_import_path(name):
    spec = MODELS[name]
    assert spec.flax_path.startswith("seres_jax.") and ":" in spec.flax_path
    assert spec.torch_path.startswith("seres_torch.") and ":" in spec.torch_path
    assert spec.flax_cls is pkgutil.resolve_name(spec.flax_path)


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", NAMES)
def test_twins_take_the_same_arguments_and_defaults(name):
    spec = MODELS[name]
    assert spec.torch_cls is pkgutil.resolve_name(spec.torch_path)
    torch_defaults = {
        key: p.default for key, p in inspect.signature(spec.torch_cls).parameters.items()
    }
    flax_defaults = {f.name: f.default for f in spec.flax_cls.__dataclass_fields__.values()}
    assert {key: flax_defaults[key] for key in torch_defaults} == torch_defaults
    assert set(spec.arguments()) == set(torch_defaults)


@pytest.mark.parametrize("name", sorted({MODELS[n].flax_path: n for n in NAMES}.values()))
def test_the_nnx_twin_takes_the_linen_arguments_and_defaults(name):
    spec = MODELS[name]
    nnx_defaults = {
        key: p.default
        for key, p in inspect.signature(spec.nnx_cls.__init__).parameters.items()
        if key not in ("self", "dtype", "param_dtype", "rngs")
    }
    flax_defaults = {f.name: f.default for f in spec.flax_cls.__dataclass_fields__.values()}
    assert spec.nnx_cls.__name__ == spec.flax_cls.__name__
    assert nnx_defaults == {key: flax_defaults[key] for key in spec.arguments()}


def test_building_every_flax_model_does_not_import_torch():
    code = (
        "import sys, seres_jax.registry as r;"
        "[r.build_flax(name) for name in r.MODELS];"
        "r.variables_template('seresnet_tiny:base=4,n=1');"
        "import seres_jax.nnx as n; n.abstract_model('seresnet_tiny:base=4,n=1');"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", HEAVY)
def test_strict_round_trip(name):
    model = randomize_batchnorm(build_torch(name, **reduced_arguments(name)), seed=1)
    template = variables_template(name, **reduced_arguments(name))
    assert count_params(template) == sum(p.numel() for p in model.parameters())
    variables = torch_to_flax(model.state_dict(), template)  # strict: every key, shape, dtype
    fresh = build_torch(name, **reduced_arguments(name))
    fresh.load_state_dict(flax_to_torch(variables, fresh), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", INIT)
def test_a_fresh_flax_model_is_initialised_as_its_torch_twin(name):
    """Training from scratch in JAX starts where PyTorch (timm's init) would: every constant
    tensor (BatchNorm's ones and zeros, a zero-initialised last BN, the statistics) equal, and
    every random one of 256 values or more drawn with the same spread (its standard deviation
    within 25 %; the initialisers in question differ by 2x or more)."""
    torch.manual_seed(0)
    model = build_torch(name, **reduced_arguments(name))
    n, c, h, w = image_shape(name, **reduced_arguments(name))
    x = jnp.zeros((n, h, w, c))
    variables = jax.jit(build_flax(name, **reduced_arguments(name)).init)(jax.random.key(0), x)
    ours = flax_to_torch(variables, model)
    for key, theirs in model.state_dict().items():
        a, b = theirs.double(), ours[key].double()
        if a.dim() == 0 or (a.numel() > 1 and bool((a == a.flatten()[0]).all())):
            assert torch.equal(a, b), key
        elif a.numel() >= 256:
            ratio = float(b.std() / a.std())
            assert 0.8 < ratio < 1.25, (key, tuple(a.shape), ratio)


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", HEAVY)
def test_reduced_parity(name, train, jax_device):
    """The linen model and its NNX twin, each against the PyTorch model at the same gates:
    outputs, input and parameter gradients, running statistics. The NNX model takes the same
    converted weights (``compare_modules`` runs it through ``seres_jax.nnx.linen_apply``); it
    computes the linen model's program, so it mostly hits the compilation cache."""
    model, flax_model, x = reduced_case(name)
    assert_parity(compare_modules(model, flax_model, x, train=train, device=jax_device))
    nnx_model = snnx.abstract_model(name, **reduced_arguments(name))
    result = compare_modules(model, nnx_model, x, train=train, device=jax_device)
    assert_parity(result, label="fp32 nnx")


@pytest.mark.slow
@pytest.mark.requires_torch
@pytest.mark.parametrize("name", NAMES)
def test_full_size_init_and_strict_round_trip(name):
    """As registered: a concrete ``init`` has the template's shapes and dtypes, and PyTorch's
    weights go through that template and back bit for bit."""
    model = randomize_batchnorm(build_torch(name), seed=1)
    template = variables_template(name)
    n, c, h, w = image_shape(name)
    x = jnp.zeros((n, h, w, c))
    # rbg: threefry's init compiles slowly on the CPU.
    initialised = jax.jit(build_flax(name).init)(jax.random.key(0, impl="rbg"), x)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), initialised)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), template)
    assert count_params(initialised) == sum(p.numel() for p in model.parameters())
    fresh = build_torch(name)
    fresh.load_state_dict(flax_to_torch(torch_to_flax(model.state_dict(), template), fresh))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_random_variables_are_seeded_stand_ins_of_the_templates_shapes():
    """Every leaf has the template's shape and dtype; one seed gives the same draw; kernels
    are at He scale; BatchNorm variances are positive; the logits are finite and of a few
    units, as the tests and benchmarks that lay out runs with them need."""
    import numpy as np

    arch = "seresnet_tiny:in_ch=1,base=8,n=1"
    template, drawn = variables_template(arch), random_variables(arch, seed=3)
    assert jax.tree.map(lambda t: (t.shape, t.dtype), template) == jax.tree.map(
        lambda d: (d.shape, d.dtype), drawn
    )
    again, other = random_variables(arch, seed=3), random_variables(arch, seed=4)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, drawn, again)))
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, drawn, other)))
    leaves = jax.tree_util.tree_flatten_with_path(drawn)[0]
    kernels = [v for p, v in leaves if str(p[-1].key) == "kernel" and v.size >= 256]
    assert kernels and all(
        0.8 < k.std() * np.sqrt(np.prod(k.shape[:-1]) / 2) < 1.2 for k in kernels
    )
    variances = [v for p, v in leaves if str(p[-1].key) == "var"]
    assert variances and all(float(v.min()) > 0 for v in variances)
    logits = build_flax(arch).apply(drawn, np.ones((2, 8, 8, 1), np.float32))
    assert np.isfinite(logits).all() and 0.1 < float(np.abs(logits).max()) < 100
