"""Numerical parity between a ``seres_torch`` module and its ``seres_jax`` twin.

``compare_modules`` runs the same weights and the same input through both frameworks and measures
the forward output, the gradient wrt the input, the gradient wrt every parameter (mapped through
``seres_jax.convert``) and, in train mode, the updated running statistics.

Tolerance policy. Errors are *relative to the reference's largest magnitude*,
``max|jax - torch| / max|torch|`` per tensor, because elementwise relative error is meaningless
for values near zero. The reference is PyTorch float32 on the CPU with TF32 off; JAX runs with
``jax_default_matmul_precision="highest"``. Float32 PyTorch itself differs from float64 PyTorch
by ~3e-7 (outputs) and ~3e-6 (gradients) on these models, so the float32 gates leave an order
of magnitude of headroom: ``FP32_TOL``. Train mode on very few values per channel (say batch 1
at 2×2) is ill-conditioned: there float32 PyTorch itself strays ~1e-4 from float64 in the
gradients, so such cases are checked in eval mode. bfloat16 compute (8-bit mantissa, float32
parameters and statistics) is checked against the same float32 reference with ``BF16_TOL``:
measured ~2e-2 (outputs), ~3e-2 (input gradients) and up to ~1.3e-1 for the gradient of a
small SE bias, whose entries are sums of many rounded products that mostly cancel.

This module imports torch lazily; the rest of ``seres_jax`` never does.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import numpy as np

from .convert import flax_to_state_dict, torch_to_flax

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Tolerance:
    """Gates on relative error (to the reference's max-abs) per kind of tensor."""

    output: float
    input_grad: float
    param_grad: float
    running_stats: float


FP32_TOL = Tolerance(output=1e-5, input_grad=1e-4, param_grad=1e-4, running_stats=1e-5)
BF16_TOL = Tolerance(output=5e-2, input_grad=1e-1, param_grad=2.5e-1, running_stats=5e-2)


def relative_error(actual: Any, reference: Any) -> float:
    """``max|actual - reference| / max|reference|`` in float64 (absolute if the reference is 0)."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs reference {r.shape}")
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    err = float(np.max(np.abs(a - r))) if r.size else 0.0
    return err / scale if scale > 0 else err


@dataclass
class ParityResult:
    """Relative errors of one comparison; keys of the dicts are PyTorch ``state_dict`` keys."""

    output: float
    input_grad: float
    param_grads: dict[str, float] = field(default_factory=dict)
    running_stats: dict[str, float] = field(default_factory=dict)

    def failures(self, tol: Tolerance) -> list[str]:
        """Every measurement above its gate, as readable lines (empty when parity holds)."""
        checks = [
            ("output", self.output, tol.output),
            ("input grad", self.input_grad, tol.input_grad),
        ]
        checks += [(f"grad {k}", v, tol.param_grad) for k, v in self.param_grads.items()]
        checks += [(k, v, tol.running_stats) for k, v in self.running_stats.items()]
        return [f"{name}: {err:.3g} > {gate:g}" for name, err, gate in checks if not err <= gate]

    def worst(self) -> dict[str, float]:
        """The largest error of each kind."""
        return {
            "output": self.output,
            "input_grad": self.input_grad,
            "param_grad": max(self.param_grads.values(), default=0.0),
            "running_stats": max(self.running_stats.values(), default=0.0),
        }


def _to_nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _takes_train(module: nn.Module) -> bool:
    return "train" in inspect.signature(module.__call__).parameters


def _torch_side(
    module: torch.nn.Module, x: np.ndarray, cotangent: np.ndarray, train: bool
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    import torch

    module = copy.deepcopy(module).train(train)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out = module(xt)
    out.backward(torch.from_numpy(cotangent))
    grads = {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
    buffers = {k: b.numpy().copy() for k, b in module.named_buffers()}
    return out.detach().numpy().copy(), xt.grad.numpy().copy(), grads, buffers


def compare_modules(
    torch_module: torch.nn.Module,
    flax_module: nn.Module,
    x: np.ndarray,
    *,
    train: bool,
    seed: int = 0,
    device: jax.Device | None = None,
) -> ParityResult:
    """Run ``x`` (NCHW, float32) through both modules with ``torch_module``'s weights.

    Gradients are those of ``sum(output * c)`` for a seeded random cotangent ``c``, so every
    output element carries a different weight. ``torch_module`` itself is not modified.
    The JAX side runs on ``device`` (default: JAX's default device).
    """
    x = np.asarray(x, dtype=np.float32)
    state = {k: v.detach().clone() for k, v in torch_module.state_dict().items()}
    with jax.default_device(device) if device is not None else nullcontext():
        variables = torch_to_flax(state)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        kwargs = {"train": train} if _takes_train(flax_module) else {}

        def forward(p: Mapping[str, Any], xj: jax.Array) -> tuple[jax.Array, Any]:
            out, updates = flax_module.apply(
                {"params": p, "batch_stats": batch_stats}, xj, mutable=["batch_stats"], **kwargs
            )
            return out.astype(np.float32), updates.get("batch_stats", {})

        def vjp(p: Mapping[str, Any], xj: jax.Array, ct: jax.Array) -> tuple[Any, ...]:
            out, pullback, new_stats = jax.vjp(forward, p, xj, has_aux=True)
            grad_p, grad_x = pullback(ct)
            return out, grad_x, grad_p, new_stats

        out_shape = jax.eval_shape(forward, params, _to_nhwc(x))[0].shape
        rng = np.random.default_rng(seed)
        cotangent_j = rng.standard_normal(out_shape).astype(np.float32)
        cotangent_t = cotangent_j.transpose(0, 3, 1, 2) if len(out_shape) == 4 else cotangent_j
        out_j, gx_j, gp_j, stats_j = jax.device_get(jax.jit(vjp)(params, _to_nhwc(x), cotangent_j))

    out_t, gx_t, gp_t, buffers_t = _torch_side(torch_module, x, cotangent_t, train)
    grads_j = flax_to_state_dict({"params": gp_j})
    if set(grads_j) != set(gp_t):
        raise AssertionError(
            f"parameter sets differ: only in torch {sorted(set(gp_t) - set(grads_j))}, "
            f"only in flax {sorted(set(grads_j) - set(gp_t))}"
        )
    result = ParityResult(
        output=relative_error(out_j, _to_nhwc(out_t)),
        input_grad=relative_error(gx_j, _to_nhwc(gx_t)),
        param_grads={k: relative_error(grads_j[k], g) for k, g in gp_t.items()},
    )
    if train:
        stats_j = flax_to_state_dict({"batch_stats": stats_j})
        for key, ref in buffers_t.items():
            if key.endswith("num_batches_tracked"):
                # A count: exact or wrong, reported as the absolute difference.
                result.running_stats[key] = float(abs(int(stats_j[key]) - int(ref)))
            else:
                result.running_stats[key] = relative_error(stats_j[key], ref)
    return result
