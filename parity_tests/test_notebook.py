"""seres_torch and seres_jax against the reference notebook's own classes.

Checkpoint compatibility (same keys, order, shapes; ``strict=True`` loading; same function)
and the notebook's printed parameter counts, which are the acceptance figures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import seres_jax as sj
from seres_jax import nnx as snnx
from seres_jax.parity import compare_modules, randomize_batchnorm

from .helpers import HAVE_TORCH, assert_parity, nchw_input
from .notebook import FIXTURE, SHARED, run_notebook

if HAVE_TORCH:
    import torch

    import seres_torch as st


@pytest.fixture(scope="module")
def nb():
    return run_notebook()


# name -> (notebook class, seres class, args, kwargs, NCHW input shape)
PAIRS = {
    "SEBlock(64)": ("SEBlock", "SEBlock", (64,), {}, (2, 64, 5, 5)),
    "SEBlock(12,r3,min5)": ("SEBlock", "SEBlock", (12, 3, 5), {}, (1, 12, 3, 4)),
    "ConvBNAct(relu,k1s2p0)": (
        "ConvBNAct", "ConvBNAct", (8, 16), dict(k=1, s=2, p=0, act="relu"), (2, 8, 9, 7)
    ),
    "ConvBNAct(5x5,s2)": ("ConvBNAct", "ConvBNAct", (3, 8), dict(k=5, s=2, p=2), (2, 3, 13, 11)),
    "PostAct(32,32)": ("SEResBlock_PostAct", "SEResBlockPostAct", (32, 32), {}, (2, 32, 9, 9)),
    "PostAct(32,64,s2)": (
        "SEResBlock_PostAct", "SEResBlockPostAct", (32, 64), dict(stride=2), (2, 32, 15, 15)
    ),
    "PreAct(32,32)": ("SEResBlock_PreAct", "SEResBlockPreAct", (32, 32), {}, (2, 32, 9, 9)),
    "PreAct(32,64,s2)": (
        "SEResBlock_PreAct", "SEResBlockPreAct", (32, 64), dict(stride=2), (2, 32, 17, 13)
    ),
    "Tiny(post)": ("SEResNetTiny", "SEResNetTiny", (), {}, (2, 3, 17, 13)),
    "Tiny(pre,in1,b8,n1,r4,k7)": (
        "SEResNetTiny", "SEResNetTiny", (),
        dict(in_ch=1, num_classes=7, base=8, n=1, reduction=4, preact=True), (3, 1, 15, 15),
    ),
}  # fmt: skip
PAIR_NAMES = list(PAIRS)


def _build(nb, name):
    """(notebook module, seres_torch module, seres_jax module, NCHW input shape)."""
    notebook_cls, cls, args, kwargs, shape = PAIRS[name]
    return (
        nb.namespace[notebook_cls](*args, **kwargs),
        getattr(st, cls)(*args, **kwargs),
        getattr(sj, cls)(*args, **kwargs),
        shape,
    )


@pytest.mark.requires_torch
def test_notebook_runs_and_prints_its_recorded_outputs(nb):
    printed = "\n".join(line.strip() for line in nb.printed.splitlines() if line.strip())
    assert printed == nb.expected_output


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/seed is not beside this checkout")
def test_fixture_copy_is_the_shared_notebook():
    assert FIXTURE.read_bytes() == SHARED.read_bytes()


# The counts the notebook prints: the acceptance figures.
NOTEBOOK_COUNTS = {
    "SEBlock(64)": ("SEBlock", "SEBlock", (64,), {}, 580),
    "PostAct s1": ("SEResBlock_PostAct", "SEResBlockPostAct", (32, 32), {}, 18_852),
    "PostAct s2": ("SEResBlock_PostAct", "SEResBlockPostAct", (32, 64), {"stride": 2}, 58_308),
    "PreAct s1": ("SEResBlock_PreAct", "SEResBlockPreAct", (32, 32), {}, 18_852),
    "PreAct s2": ("SEResBlock_PreAct", "SEResBlockPreAct", (32, 64), {"stride": 2}, 58_116),
    "Tiny post": ("SEResNetTiny", "SEResNetTiny", (), {}, 702_986),
    "Tiny pre": ("SEResNetTiny", "SEResNetTiny", (), {"preact": True}, 702_410),
}


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", list(NOTEBOOK_COUNTS))
def test_parameter_counts_are_the_notebooks(nb, name):
    notebook_cls, cls, args, kwargs, count = NOTEBOOK_COUNTS[name]
    assert nb.namespace["count_params"](nb.namespace[notebook_cls](*args, **kwargs)) == count
    assert st.count_params(getattr(st, cls)(*args, **kwargs)) == count
    in_ch = args[0] if args else 3
    fm = getattr(sj, cls)(*args, **kwargs)
    shapes = jax.eval_shape(fm.init, jax.random.key(0), jnp.zeros((1, 8, 8, in_ch)))
    assert sj.count_params(shapes) == count


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", PAIR_NAMES)
def test_state_dict_keys_order_and_shapes_match(nb, name):
    ref, tm, _, _ = _build(nb, name)
    ref_sd, sd = ref.state_dict(), tm.state_dict()
    assert list(sd) == list(ref_sd)
    assert [tuple(v.shape) for v in sd.values()] == [tuple(v.shape) for v in ref_sd.values()]


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", PAIR_NAMES)
def test_notebook_checkpoint_loads_strict_and_computes_the_same(nb, name, train):
    ref, tm, _, shape = _build(nb, name)
    randomize_batchnorm(ref, seed=3)
    tm.load_state_dict(ref.state_dict(), strict=True)
    x = torch.from_numpy(nchw_input(shape, seed=5))
    ref.train(train)
    tm.train(train)
    torch.testing.assert_close(tm(x.clone()), ref(x.clone()), rtol=0, atol=0)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(tm.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", PAIR_NAMES)
def test_notebook_checkpoint_runs_in_flax(nb, name, train, jax_device):
    """A notebook state_dict, converted strictly, gives the notebook's outputs and gradients."""
    ref, _, fm, shape = _build(nb, name)
    randomize_batchnorm(ref, seed=7)
    x = nchw_input(shape, seed=11)
    template = jax.eval_shape(fm.init, jax.random.key(0), jnp.zeros((1, *shape[2:], shape[1])))
    sj.torch_to_flax(ref.state_dict(), template)  # strict: raises on any mismatch
    assert_parity(compare_modules(ref, fm, x, train=train, device=jax_device))


# The notebook's networks as registered architectures, for the NNX models.
NNX_ARCHS = {
    "Tiny(post)": "seresnet_tiny",
    "Tiny(pre,in1,b8,n1,r4,k7)": (
        "seresnet_tiny_preact:in_ch=1,num_classes=7,base=8,n=1,reduction=4"
    ),
}


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(NNX_ARCHS))
def test_notebook_checkpoint_runs_in_nnx(nb, name, train, jax_device):
    """The notebook's state_dict loads strictly into the NNX ``SEResNetTiny`` and gives the
    notebook's outputs, gradients and running statistics."""
    ref, _, _, shape = _build(nb, name)
    randomize_batchnorm(ref, seed=7)
    model = snnx.from_torch(ref.state_dict(), NNX_ARCHS[name])  # strict
    x = nchw_input(shape, seed=11)
    result = compare_modules(
        ref, model, x, train=train, device=jax_device, variables=snnx.to_linen(model)
    )
    assert_parity(result, label="fp32 nnx")
