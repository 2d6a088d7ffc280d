"""Every registered architecture (``seres_jax.registry.MODELS``), tested the same way: its two
classes by import path, ``init`` (abstract here: the conversion template; concrete at full size
behind ``-m slow``), a strict conversion round trip and eval/train parity at reduced sizes. A new
registration is covered without a new test."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seres_jax.convert import flax_to_torch, torch_to_flax
from seres_jax.layers import count_params
from seres_jax.parity import compare_modules, randomize_batchnorm
from seres_jax.registry import MODELS, build_flax, build_torch, model_config, variables_template

from .helpers import HAVE_TORCH, assert_parity, nchw_input

if HAVE_TORCH:
    import torch

NAMES = sorted(MODELS)
# The round trip and parity at reduced size run, in the default suite, for one name per
# registered class (the timm zoo's 40 names are two classes, tested family by family in
# test_resnet.py and test_senet.py); for every name behind `-m slow`.
_FIRST: dict[str, str] = {}
for _name in NAMES:
    _FIRST.setdefault(MODELS[_name].flax_path, _name)
HEAVY = [n if n in _FIRST.values() else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
# Reduced sizes, applied to whichever of these constructor arguments an architecture has; the
# rest (block type, grouped or not, stem, attention) stay as registered. No dropout: PyTorch's
# random mask cannot be matched.
REDUCED = dict(
    base=8, n=1, channels=(16, 32, 64, 128), stem_width=8, layers=(1, 1, 1, 1), num_classes=10,
    drop_rate=0.0,
)  # fmt: skip
# Odd: exercises the ceil-mode average-pool downsampling; leaves the zoo's last stage 2×2.
IMAGE = 35


def _reduced(name: str) -> dict[str, object]:
    arguments = MODELS[name].arguments()
    reduced = {key: value for key, value in REDUCED.items() if key in arguments}
    if arguments.get("cardinality", 1) > 1:
        reduced["cardinality"] = 4  # still grouped: 32 groups are slow on the CPU
    if arguments.get("block_widths") is not None:
        reduced["block_widths"] = None  # a pruned model's widths are per block of its depth
    if arguments.get("block_reduce_first", 1) > 1:
        reduced["base_width"] = 16
    return reduced


def _image(name: str, seed: int) -> np.ndarray:
    spec, arguments = model_config(name, **_reduced(name))
    side = 64 if arguments.get("aa_layer") else IMAGE  # timm's aa pools need multiples of 32
    return nchw_input((2, arguments[spec.in_channels_arg], side, side), seed=seed)


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


def test_building_every_flax_model_does_not_import_torch():
    code = (
        "import sys, seres_jax.registry as r;"
        "[r.build_flax(name) for name in r.MODELS];"
        "r.variables_template('seresnet_tiny:base=4,n=1');"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", HEAVY)
def test_strict_round_trip(name):
    model = randomize_batchnorm(build_torch(name, **_reduced(name)), seed=1)
    template = variables_template(name, **_reduced(name))
    assert count_params(template) == sum(p.numel() for p in model.parameters())
    variables = torch_to_flax(model.state_dict(), template)  # strict: every key, shape, dtype
    fresh = build_torch(name, **_reduced(name))
    fresh.load_state_dict(flax_to_torch(variables, fresh), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", HEAVY)
def test_reduced_parity(name, train, jax_device):
    model = randomize_batchnorm(build_torch(name, **_reduced(name)), seed=5)
    x = _image(name, seed=2)
    result = compare_modules(
        model, build_flax(name, **_reduced(name)), x, train=train, device=jax_device
    )
    assert_parity(result)


@pytest.mark.slow
@pytest.mark.requires_torch
@pytest.mark.parametrize("name", NAMES)
def test_full_size_init_and_strict_round_trip(name):
    """As registered: a concrete ``init`` has the template's shapes and dtypes, and PyTorch's
    weights go through that template and back bit for bit."""
    model = randomize_batchnorm(build_torch(name), seed=1)
    template = variables_template(name)
    spec, arguments = model_config(name)
    x = jnp.zeros((1, IMAGE, IMAGE, arguments[spec.in_channels_arg]))
    # rbg: threefry's init compiles slowly on the CPU.
    initialised = jax.jit(build_flax(name).init)(jax.random.key(0, impl="rbg"), x)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), initialised)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), template)
    assert count_params(initialised) == sum(p.numel() for p in model.parameters())
    fresh = build_torch(name)
    fresh.load_state_dict(flax_to_torch(torch_to_flax(model.state_dict(), template), fresh))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
