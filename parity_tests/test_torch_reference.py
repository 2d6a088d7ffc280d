"""``seres_jax`` against PyTorch outputs recorded in ``fixtures/torch_reference.safetensors``, so
that an install without torch (a TPU VM) still checks PyTorch semantics: BatchNorm over several
train-mode steps (output, running mean, unbiased running variance with PyTorch's momentum,
``num_batches_tracked``, then eval mode) and a small ``SEResNetTiny``'s forward and backward.
``fixtures/record_torch_fixtures.py`` records the file; the last test checks it is current."""

from __future__ import annotations

import functools
import json
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

import seres_jax as sj
from seres_jax import nnx as snnx
from seres_jax.convert import flax_to_state_dict, torch_to_flax
from seres_jax.parity import ParityResult, relative_error
from seres_jax.registry import format_arch

from .helpers import TORCH_REFERENCE, assert_parity

SCRIPT = TORCH_REFERENCE.with_name("record_torch_fixtures.py")

with safe_open(TORCH_REFERENCE, "np") as _file:
    REFERENCE = {k: _file.get_tensor(k) for k in _file.keys()}  # noqa: SIM118 (not a dict)
    TINY = json.loads(_file.metadata()["tiny"])
BATCHNORM_CASES = sorted({k.split("/")[1] for k in REFERENCE if k.startswith("bn/")})


def _group(prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in REFERENCE.items() if k.startswith(prefix)}


def _nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


@pytest.mark.parametrize("case", BATCHNORM_CASES)
def test_batchnorm_follows_recorded_torch_over_train_steps_then_eval(case):
    ref = _group(f"bn/{case}/")
    bn = sj.BatchNorm()
    variables = {
        "params": {"scale": ref["state/weight"], "bias": ref["state/bias"]},
        "batch_stats": {
            "mean": ref["state/running_mean"],
            "var": ref["state/running_var"],
            "num_batches_tracked": ref["state/num_batches_tracked"].astype(np.int32),
        },
    }
    step = jax.jit(functools.partial(bn.apply, train=True, mutable=["batch_stats"]))
    steps = sum(k.startswith("x/") for k in ref)
    assert steps == 5
    for i in range(steps):
        y, updates = step(variables, _nhwc(ref[f"x/{i}"]))
        variables = {"params": variables["params"], **updates}
        assert relative_error(y, _nhwc(ref[f"y/{i}"])) < 1e-5, i
    stats = variables["batch_stats"]
    assert relative_error(stats["mean"], ref["final/running_mean"]) < 1e-6
    assert relative_error(stats["var"], ref["final/running_var"]) < 1e-6
    assert int(stats["num_batches_tracked"]) == int(ref["final/num_batches_tracked"])
    y_eval = jax.jit(bn.apply)(variables, _nhwc(ref[f"x/{steps - 1}"]))
    assert relative_error(y_eval, _nhwc(ref["eval_y"])) < 1e-5


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_tiny_forward_and_backward_match_recorded_torch(mode, api):
    """The linen ``SEResNetTiny`` and its NNX twin (run on the same weights through
    ``seres_jax.nnx.linen_apply``) against PyTorch's recorded forward and backward."""
    ref = _group(f"tiny/{mode}/")
    model = sj.SEResNetTiny(**TINY)
    x = _nhwc(REFERENCE["tiny/x"])
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *x.shape[1:])))
    variables = torch_to_flax(_group("tiny/state/"), template)
    arch = format_arch("seresnet_tiny", TINY)
    apply = model.apply if api == "linen" else snnx.linen_apply(snnx.abstract_model(arch))

    @jax.jit
    def vjp(params, x, cotangent):
        def forward(p, x_):
            return apply(
                {"params": p, "batch_stats": variables["batch_stats"]},
                x_,
                train=mode == "train",
                mutable=["batch_stats"],
            )

        y, pullback, state = jax.vjp(forward, params, x, has_aux=True)
        return y, *pullback(cotangent), state

    y, grad_p, grad_x, state = vjp(variables["params"], x, ref["cotangent"])
    grads = flax_to_state_dict({"params": grad_p})
    assert grads.keys() == _group(f"tiny/{mode}/grad/").keys()
    result = ParityResult(
        output=relative_error(y, ref["y"]),
        input_grad=relative_error(grad_x, _nhwc(ref["grad_x"])),
        param_grads={k: relative_error(g, ref[f"grad/{k}"]) for k, g in grads.items()},
    )
    if mode == "train":
        stats = flax_to_state_dict({"batch_stats": state["batch_stats"]})
        buffers = _group("tiny/train/buffers/")
        assert stats.keys() == buffers.keys()
        result.running_stats = {
            # A count is exact or wrong: its absolute difference, as compare_modules reports it.
            k: float(abs(stats[k] - v)) if v.dtype.kind == "i" else relative_error(stats[k], v)
            for k, v in buffers.items()
        }
    assert_parity(result, label="fp32 vs recorded torch" + (" (nnx)" if api == "nnx" else ""))


@pytest.mark.requires_torch
def test_the_recorded_fixture_is_what_the_script_records_now():
    """Up to float32 rounding, which may differ on another CPU; counts exactly."""
    recorded = runpy.run_path(str(SCRIPT))["record"]()
    assert recorded.keys() == REFERENCE.keys()
    for key, want in REFERENCE.items():
        if want.dtype.kind == "f":
            assert relative_error(recorded[key], want) < 1e-5, key
        else:
            np.testing.assert_array_equal(recorded[key], want, err_msg=key)
