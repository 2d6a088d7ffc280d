"""SEResNetTiny in both frameworks: parity at full size, parameter counts, mixed precision, jit."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seres_jax as sj
from seres_jax.convert import torch_to_flax
from seres_jax.parity import BF16_TOL, compare_modules, randomize_batchnorm

from .helpers import HAVE_TORCH, assert_parity, nchw_input

if HAVE_TORCH:
    import seres_torch as st


@pytest.mark.requires_torch
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("preact", [True], ids=["pre"])  # post-act: test_notebook, full size
def test_tiny_parity_cifar_size(preact, train, jax_device):
    tm = randomize_batchnorm(st.SEResNetTiny(preact=preact), seed=4)
    fm = sj.SEResNetTiny(preact=preact)
    x = nchw_input((4, 3, 32, 32), seed=9)
    assert_parity(compare_modules(tm, fm, x, train=train, device=jax_device))


@pytest.mark.requires_torch
@pytest.mark.parametrize(("batch", "train"), [(1, False), (8, True)], ids=["b1-eval", "b8-train"])
def test_tiny_digits_size(batch, train, jax_device):
    """8×8 single-channel digits: batch 1 in eval (single-image inference) and a training batch
    (the deepest stage is 2×2; batch 1 there would be ill-conditioned, see seres_jax.parity)."""
    kw = dict(in_ch=1, num_classes=10, base=16, n=2, reduction=8)
    tm = randomize_batchnorm(st.SEResNetTiny(**kw), seed=5)
    x = nchw_input((batch, 1, 8, 8), seed=2)
    assert_parity(compare_modules(tm, sj.SEResNetTiny(**kw), x, train=train, device=jax_device))


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"preact": True},
        {"in_ch": 1, "num_classes": 7, "base": 8, "n": 1, "reduction": 4},
        {"base": 24, "n": 3, "reduction": 8, "preact": True},
        {"base": 16, "n": 4, "reduction": 32},
        {"attn": "eca"},
        {"attn": None, "preact": True},
    ],
    ids=str,
)
def test_parameter_counts_match_torch(kw):
    fm = sj.SEResNetTiny(**kw)
    shapes = jax.eval_shape(fm.init, jax.random.key(0), jnp.zeros((1, 16, 16, fm.in_ch)))
    assert sj.count_params(shapes) == st.count_params(st.SEResNetTiny(**kw))
    # And the state_dict converts strictly onto those shapes.
    torch_to_flax(st.SEResNetTiny(**kw).state_dict(), shapes)


@pytest.mark.requires_torch
@pytest.mark.parametrize(
    ("preact", "train"), [(False, True), (True, False)], ids=["post-train", "pre-eval"]
)
def test_bfloat16_compute_against_float32_reference(preact, train, jax_device):
    tm = randomize_batchnorm(st.SEResNetTiny(base=16, preact=preact), seed=6)
    fm = sj.SEResNetTiny(base=16, preact=preact, dtype=jnp.bfloat16)
    x = nchw_input((4, 3, 16, 16), seed=1)
    result = compare_modules(tm, fm, x, train=train, device=jax_device)
    assert_parity(result, BF16_TOL, label="bf16 compute vs fp32 reference")


@pytest.mark.requires_torch
def test_bfloat16_compute_keeps_float32_parameters_and_statistics():
    fm = sj.SEResNetTiny(base=8, dtype=jnp.bfloat16)
    variables = torch_to_flax(st.SEResNetTiny(base=8).state_dict())
    x = jnp.ones((2, 8, 8, 3))
    apply = jax.jit(functools.partial(fm.apply, train=True, mutable=["batch_stats"]))
    logits, updates = apply(variables, x)
    assert logits.dtype == jnp.bfloat16
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(updates["batch_stats"])}
    assert dtypes == {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}


@pytest.mark.requires_torch
def test_jit_grad_train_step_has_no_host_sync():
    """Tracing the whole train-mode forward and backward under jit would fail on any
    host sync (a concrete value read inside ``__call__``)."""
    fm = sj.SEResNetTiny(base=8, n=1)
    variables = torch_to_flax(st.SEResNetTiny(base=8, n=1).state_dict())

    @jax.jit
    def step(variables, x, y):
        def loss(params):
            logits, upd = fm.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y]), upd

        (value, upd), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return value, grads, upd

    value, grads, upd = step(variables, jnp.ones((4, 8, 8, 3)), jnp.arange(4))
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    assert int(upd["batch_stats"]["head_0"]["num_batches_tracked"]) == 1


def test_wrong_input_layout_is_a_clear_error():
    fm = sj.SEResNetTiny()
    with pytest.raises(ValueError, match="NHWC input with 3 channels"):
        jax.eval_shape(fm.init, jax.random.key(0), jnp.zeros((1, 3, 32, 32)))


@pytest.mark.requires_torch
@pytest.mark.parametrize("attn", ["eca", None], ids=["eca", "no-attention"])
def test_tiny_attention_options_parity(attn, jax_device):
    kw = dict(in_ch=1, base=8, n=1, reduction=4, attn=attn)
    tm = randomize_batchnorm(st.SEResNetTiny(**kw), seed=8)
    x = nchw_input((4, 1, 9, 9), seed=3)
    assert_parity(compare_modules(tm, sj.SEResNetTiny(**kw), x, train=True, device=jax_device))
    assert_parity(compare_modules(tm, sj.SEResNetTiny(**kw), x, train=False, device=jax_device))


@pytest.mark.requires_torch
def test_default_attention_keeps_the_notebook_checkpoint_layout():
    """``attn`` defaults to SE: the notebook's keys and counts are untouched."""
    assert st.SEResNetTiny().state_dict().keys() == st.SEResNetTiny(attn="se").state_dict().keys()
    assert st.count_params(st.SEResNetTiny()) == 702_986
    eca_keys = [k for k in st.SEResNetTiny(attn="eca").state_dict() if ".se." in k]
    assert eca_keys and all(k.endswith(".se.conv.weight") for k in eca_keys)
