"""Numerical parity between a ``seres_torch`` module and its ``seres_jax`` twin.

``compare_modules`` runs the same weights and the same input through both frameworks and measures
the forward output, the gradient wrt the input, the gradient wrt every parameter (mapped through
``seres_jax.convert``) and, in train mode, the updated running statistics. ``parity_report``
adds every layer's output, in execution order (PyTorch forward hooks; Flax
``capture_intermediates``, matched through the converter's naming rule), and names the first
layer that diverges. ``compare_on_data`` runs both on a dataset's own batches (``seres eval
--torch``): top-1 of each, argmax agreement, largest logit difference.

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
small SE bias, whose entries are sums of many rounded products that mostly cancel. Deep
(ImageNet-sized) networks compound rounding past these fixed gates in PyTorch itself, so their
tests compare against PyTorch float64 (``reference_dtype``) and hold JAX to PyTorch's own
float32 or bfloat16 error. Fixed gates also assume no ReLU input sits within float32 rounding
of zero, where the gradient jumps: ``kink_free_input`` draws inputs that keep them clear.

This module imports torch lazily; the rest of ``seres_jax`` never does.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx
from flax.traverse_util import flatten_dict

from .convert import flax_module_path_to_torch, flax_to_state_dict, torch_to_flax

if TYPE_CHECKING:
    import torch

    from .data import Splits


@dataclass(frozen=True)
class Tolerance:
    """Gates on relative error (to the reference's max-abs) per kind of tensor."""

    output: float
    input_grad: float
    param_grad: float
    running_stats: float


FP32_TOL = Tolerance(output=1e-5, input_grad=1e-4, param_grad=1e-4, running_stats=1e-5)
"""The float32 gates, the default of ``compare_modules`` and ``parity_report``: an order of
magnitude above float32 PyTorch's own error against float64 (see the module docstring)."""
BF16_TOL = Tolerance(output=5e-2, input_grad=1e-1, param_grad=2.5e-1, running_stats=5e-2)
"""The gates of bfloat16 compute (float32 parameters and statistics) against the float32
reference, above the errors measured in the module docstring."""


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
    layers: list[LayerRow] = field(default_factory=list)

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


@dataclass(frozen=True)
class LayerRow:
    """One layer's output compared: PyTorch module path and type, NCHW shape, errors."""

    name: str
    kind: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float


@dataclass
class _TorchRun:
    out: np.ndarray
    grad_x: np.ndarray
    grads: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    activations: list[tuple[str, str, np.ndarray]]


def _grad(tensor: torch.Tensor) -> np.ndarray:
    if tensor.grad is None:
        raise ValueError("a tensor the output does not depend on has no gradient")
    return tensor.grad.numpy().copy()


def _torch_side(
    module: torch.nn.Module,
    x: np.ndarray,
    cotangent: np.ndarray,
    train: bool,
    capture: bool,
    dtype: torch.dtype | None = None,
) -> _TorchRun:
    import torch

    module = copy.deepcopy(module).train(train)
    if dtype is not None:
        module = module.to(dtype)
        x, cotangent = x.astype(np.float64), cotangent.astype(np.float64)
    activations: list[tuple[str, str, np.ndarray]] = []

    def hook(name: str) -> Callable[..., None]:
        def record(m: torch.nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                # Cloned now: a later in-place activation would overwrite the tensor.
                activations.append((name, type(m).__name__, out.detach().clone().numpy()))

        return record

    handles = (
        [m.register_forward_hook(hook(n)) for n, m in module.named_modules()] if capture else []
    )
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out = module(xt)
    for handle in handles:
        handle.remove()
    out.backward(torch.from_numpy(cotangent))
    return _TorchRun(
        out=out.detach().numpy().copy(),
        grad_x=_grad(xt),
        grads={k: _grad(p) for k, p in module.named_parameters()},
        buffers={k: b.numpy().copy() for k, b in module.named_buffers()},
        activations=activations,
    )


def _layer_rows(
    torch_activations: list[tuple[str, str, np.ndarray]], flax_intermediates: Any
) -> list[LayerRow]:
    """Per-layer output errors in PyTorch's execution order, for the layers both sides have
    (activations, pooling and containers have no Flax module and are skipped)."""
    ours = {
        flax_module_path_to_torch(path[:-1]): np.asarray(value[0])
        for path, value in flatten_dict(flax_intermediates).items()
        if path[-1] == "__call__"
    }
    rows = []
    for name, kind, ref in torch_activations:
        if name not in ours:
            continue
        got, want = ours[name], _to_nhwc(ref)
        if got.shape != want.shape:
            rows.append(LayerRow(name, kind, ref.shape, float("inf"), float("inf")))
            continue
        diff = np.abs(got.astype(np.float64) - want)
        max_abs = float(diff.max()) if diff.size else 0.0
        rows.append(LayerRow(name, kind, ref.shape, max_abs, relative_error(got, want)))
    return rows


def compare_modules(
    torch_module: torch.nn.Module,
    flax_module: nn.Module | nnx.Module,
    x: np.ndarray,
    *,
    train: bool,
    seed: int = 0,
    device: jax.Device | None = None,
    variables: Mapping[str, Any] | None = None,
    layers: bool = False,
    reference_dtype: torch.dtype | None = None,
) -> ParityResult:
    """Run ``x`` (NCHW, float32) through both modules with ``torch_module``'s weights.

    Gradients are those of ``sum(output * c)`` for a seeded random cotangent ``c``, so every
    output element carries a different weight. ``torch_module`` itself is not modified.
    The JAX side runs on ``device`` (default: JAX's default device) with ``variables``
    (default: ``torch_module``'s state converted). ``flax_module`` is a linen module or an
    NNX one (``seres_jax.nnx``), which then runs those weights through
    ``seres_jax.nnx.convert.linen_apply``. ``layers=True`` (linen only) also compares every
    layer's output (``ParityResult.layers``), from the same forward pass.
    ``reference_dtype=torch.float64`` runs PyTorch in float64: the error is then JAX's own.
    """
    x = np.asarray(x, dtype=np.float32)
    mutable = ["batch_stats", "intermediates"] if layers else ["batch_stats"]
    kwargs: dict[str, Any] = {"train": train}
    if not isinstance(flax_module, nnx.Module):  # linen, or anything with its `apply`
        apply = flax_module.apply
        kwargs = {"capture_intermediates": layers, **(kwargs if _takes_train(flax_module) else {})}
    elif layers:
        raise ValueError("layers=True compares a linen module's intermediates; this is NNX")
    else:
        from .nnx.convert import linen_apply

        apply = linen_apply(flax_module)
    with _on(device):
        if variables is None:
            variables = torch_to_flax(torch_module.state_dict())
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})

        def forward(p: Any, stats: Any, xj: jax.Array) -> tuple[jax.Array, Any]:
            out, state = apply({"params": p, "batch_stats": stats}, xj, mutable=mutable, **kwargs)
            return out.astype(np.float32), state

        # Weights are arguments, not constants: the compiled program depends only on the
        # model, shapes and mode, so JAX's compilation cache can serve other weights.
        def vjp(p: Any, stats: Any, xj: jax.Array, ct: jax.Array) -> tuple[Any, ...]:
            out, pullback, state = jax.vjp(
                lambda p_, x_: forward(p_, stats, x_), p, xj, has_aux=True
            )
            grad_p, grad_x = pullback(ct)
            return out, grad_x, grad_p, state

        out_shape = jax.eval_shape(forward, params, batch_stats, _to_nhwc(x))[0].shape
        rng = np.random.default_rng(seed)
        cotangent_j = rng.standard_normal(out_shape).astype(np.float32)
        cotangent_t = cotangent_j.transpose(0, 3, 1, 2) if len(out_shape) == 4 else cotangent_j
        out_j, gx_j, gp_j, state_j = jax.device_get(
            jax.jit(vjp)(params, batch_stats, _to_nhwc(x), cotangent_j)
        )

    ref = _torch_side(torch_module, x, cotangent_t, train, layers, reference_dtype)
    grads_j = flax_to_state_dict({"params": gp_j})
    if set(grads_j) != set(ref.grads):
        raise AssertionError(
            f"parameter sets differ: only in torch {sorted(set(ref.grads) - set(grads_j))}, "
            f"only in flax {sorted(set(grads_j) - set(ref.grads))}"
        )
    result = ParityResult(
        output=relative_error(out_j, _to_nhwc(ref.out)),
        input_grad=relative_error(gx_j, _to_nhwc(ref.grad_x)),
        param_grads={k: relative_error(grads_j[k], g) for k, g in ref.grads.items()},
    )
    if layers:
        result.layers = _layer_rows(ref.activations, state_j.get("intermediates", {}))
    if train:
        stats_j = flax_to_state_dict({"batch_stats": state_j.get("batch_stats", {})})
        for key, want in ref.buffers.items():
            if key.endswith("num_batches_tracked"):
                # A count: exact or wrong, reported as the absolute difference.
                result.running_stats[key] = float(abs(int(stats_j[key]) - int(want)))
            else:
                result.running_stats[key] = relative_error(stats_j[key], want)
    return result


def _on(device: jax.Device | None) -> AbstractContextManager[Any]:
    return jax.default_device(device) if device is not None else nullcontext()


def randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm random affine parameters, running statistics and batch count, so
    eval mode is not the identity and a swapped mean/var or scale/bias cannot go unnoticed."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                weight, bias = m.weight, m.bias
                mean, var, count = m.running_mean, m.running_var, m.num_batches_tracked
                if weight is None or bias is None or mean is None or var is None or count is None:
                    continue  # affine=False or track_running_stats=False: nothing to set
                weight.copy_(0.5 + torch.rand(c, generator=gen))
                bias.copy_(0.2 * torch.randn(c, generator=gen))
                mean.copy_(0.2 * torch.randn(c, generator=gen))
                var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                count.fill_(int(torch.randint(0, 1000, (), generator=gen)))
    return module


def relu_margin(module: torch.nn.Module, x: np.ndarray, *, train: bool) -> float:
    """How near ``module``'s float64 forward pass on ``x`` comes to a ReLU's kink: the smallest
    ``|input|`` of any ``nn.ReLU`` call relative to the largest of that call. ``module`` itself
    is not modified (its running statistics included)."""
    import torch

    probe = copy.deepcopy(module).double().train(train)
    margins: list[float] = []

    def record(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        size = args[0].detach().abs()
        margins.append(float(size.min() / size.max()) if size.max() > 0 else 1.0)

    for m in probe.modules():
        if isinstance(m, torch.nn.ReLU):
            m.register_forward_pre_hook(record)  # before an in-place ReLU overwrites it
    with torch.no_grad():
        probe(torch.from_numpy(np.asarray(x, dtype=np.float64)))
    return min(margins, default=1.0)


def kink_free_input(
    module: torch.nn.Module,
    shape: tuple[int, ...],
    *,
    seeds: range = range(2, 34),
    margin: float = 1e-6,
) -> np.ndarray:
    """A standard-normal float32 input of ``shape`` (from the first of ``seeds`` that works)
    whose float64 passes through ``module``, eval and train, keep every ReLU input at least
    ``margin`` (relative) away from zero.

    Float32 rounding (~1e-7 relative) can put a value within that of zero on either side of the
    kink, and the gradients below it then jump: seresnet50t at reduced width on seed 2 has one
    at 1e-7 of its layer's scale, where JAX and PyTorch float32 legitimately differ by 4e-2 in
    every gradient below (and JAX float64 matches PyTorch float64 to 1e-6). A parity test on such
    an input measures rounding luck, not the implementation."""
    for seed in seeds:
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        if min(relu_margin(module, x, train=t) for t in (False, True)) >= margin:
            return x
    raise ValueError(f"no input among seeds {seeds} keeps every ReLU {margin:g} from its kink")


# --------------------------------------------------------------------------- layer report


_SHOWN_FAILURES = 8


@dataclass
class ModeReport:
    """One mode (eval or train): the end-to-end result and its per-layer rows."""

    mode: str
    result: ParityResult

    @property
    def rows(self) -> list[LayerRow]:
        """Every layer's output error, in PyTorch's execution order."""
        return self.result.layers

    def first_divergence(self, tol: Tolerance) -> LayerRow | None:
        """The first layer, in execution order, whose output error exceeds ``tol.output``
        (or is NaN); ``None`` when none does."""
        return next((row for row in self.rows if not row.max_rel <= tol.output), None)


@dataclass
class ParityReport:
    """Layer-by-layer parity of a model in eval and train mode; ``ok`` when all gates hold."""

    arch: str
    device: str
    input_shape: tuple[int, ...]
    tolerance: Tolerance
    modes: list[ModeReport]

    @property
    def ok(self) -> bool:
        """Whether every mode holds ``tolerance``: no layer diverges, and no output, gradient or
        running statistic exceeds its gate."""
        return all(
            m.first_divergence(self.tolerance) is None and not m.result.failures(self.tolerance)
            for m in self.modes
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        tol = self.tolerance
        return {
            "arch": self.arch,
            "device": self.device,
            "input_shape_nchw": list(self.input_shape),
            "tolerance": dataclasses.asdict(tol),
            "ok": self.ok,
            "modes": {
                m.mode: {
                    "first_divergence": getattr(m.first_divergence(tol), "name", None),
                    "layers": [
                        {
                            **dataclasses.asdict(r),
                            "shape": list(r.shape),
                            "ok": r.max_rel <= tol.output,
                        }
                        for r in m.rows
                    ],
                    "output": m.result.output,
                    "input_grad": m.result.input_grad,
                    "param_grads": m.result.param_grads,
                    "running_stats": m.result.running_stats,
                    "failures": m.result.failures(tol),
                }
                for m in self.modes
            },
        }

    def format(self) -> str:
        """A plain-text table per mode, then the verdict."""
        tol = self.tolerance
        lines = [f"parity of {self.arch}: PyTorch (CPU, float32) vs JAX ({self.device}), "
                 f"input {self.input_shape} NCHW"]  # fmt: skip
        for m in self.modes:
            lines += [
                "",
                f"{m.mode} mode — activations, error relative to PyTorch's max-abs "
                f"(gate {tol.output:g})",
                f"{'#':>3}  {'layer':<34} {'type':<18} {'shape':<20} {'max abs':>9} {'max rel':>9}",
            ]
            for i, r in enumerate(m.rows, 1):
                mark = "" if r.max_rel <= tol.output else "  <-- exceeds"
                name = r.name or "(model output)"
                lines.append(
                    f"{i:>3}  {name:<34} {r.kind:<18} {r.shape!s:<20} "
                    f"{r.max_abs:>9.2e} {r.max_rel:>9.2e}{mark}"
                )
            worst_key, worst = max(
                m.result.param_grads.items(), key=lambda kv: kv[1], default=("-", 0.0)
            )
            lines.append(
                f"     output {m.result.output:.2e} | input grad {m.result.input_grad:.2e} | "
                f"worst param grad {worst:.2e} ({worst_key})"
                + (
                    f" | worst running stat {max(m.result.running_stats.values()):.2e}"
                    if m.result.running_stats
                    else ""
                )
            )
            first = m.first_divergence(tol)
            if first is not None:
                lines.append(
                    f"     first divergence: {first.name or '(model output)'} ({first.kind}), "
                    f"{first.max_rel:.2e} > {tol.output:g}"
                )
            failures = m.result.failures(tol)
            lines += [f"     FAIL {f}" for f in failures[:_SHOWN_FAILURES]]
            if len(failures) > _SHOWN_FAILURES:
                lines.append(f"     ... and {len(failures) - _SHOWN_FAILURES} more (see --json)")
        lines += ["", "parity holds" if self.ok else "PARITY FAILS"]
        return "\n".join(lines)


def parity_report(
    torch_module: torch.nn.Module,
    flax_module: nn.Module,
    x: np.ndarray,
    *,
    variables: Mapping[str, Any] | None = None,
    arch: str = "",
    device: jax.Device | None = None,
    tol: Tolerance = FP32_TOL,
    modes: tuple[str, ...] = ("eval", "train"),
    seed: int = 0,
) -> ParityReport:
    """Compare ``torch_module`` with ``flax_module`` layer by layer on the NCHW batch ``x``.

    ``variables`` are the Flax weights (default: ``torch_module``'s converted); passing other
    ones checks a separately converted or trained checkpoint against the PyTorch one. The
    report names the first layer, in execution order, whose output error exceeds ``tol``.
    """
    x = np.asarray(x, dtype=np.float32)
    if variables is None:
        variables = torch_to_flax(torch_module.state_dict())
    reports = [
        ModeReport(
            mode,
            compare_modules(
                torch_module, flax_module, x, train=mode == "train", seed=seed, device=device,
                variables=variables, layers=True,
            ),
        )
        for mode in modes
    ]  # fmt: skip
    platform = (device or jax.devices()[0]).platform
    return ParityReport(arch or type(flax_module).__name__, platform, x.shape, tol, reports)


@dataclass(frozen=True)
class DataAgreement:
    """Both frameworks on the very same batches of a dataset: each one's top-1, the fraction
    of images on which their argmax agrees, and the largest absolute logit difference."""

    count: int
    jax_top1: float
    torch_top1: float
    agreement: float
    max_logit_diff: float

    def to_dict(self) -> dict[str, float]:
        """The fields as JSON-ready data."""
        return dataclasses.asdict(self)


def compare_on_data(
    torch_model: torch.nn.Module,
    model: nn.Module,
    variables: Any,
    splits: Splits,
    batch_size: int,
    split: str = "val",
    on_batch: Callable[[int], None] | None = None,
) -> DataAgreement:
    """Run ``model`` (with ``variables``) and ``torch_model`` in eval mode on every batch of
    ``splits``' ``split`` as ``seres_jax.data.eval_dataset`` gives it (one process): the same
    decoded, cropped and normalised pixels go to both. The last partial batch runs at its own
    size, unpadded, in both; ``on_batch(rows)`` is called after each batch."""
    import torch

    from .data import eval_dataset
    from .data.images import normalize

    torch_model.eval()
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    count = jax_correct = torch_correct = agree = 0
    worst = 0.0
    for images, labels, weights in eval_dataset(splits, batch_size, split, last_batch_multiple=1):
        if splits.mean is not None and splits.std is not None:
            images = normalize(images, splits.mean, splits.std)
        keep = weights > 0
        jax_logits = np.asarray(apply(variables, images), np.float32)[keep]
        with torch.no_grad():
            torch_logits = torch_model(torch.from_numpy(np.ascontiguousarray(
                images.transpose(0, 3, 1, 2)))).numpy()[keep]  # fmt: skip
        jax_pred, torch_pred = jax_logits.argmax(-1), torch_logits.argmax(-1)
        count += int(keep.sum())
        jax_correct += int((jax_pred == labels[keep]).sum())
        torch_correct += int((torch_pred == labels[keep]).sum())
        agree += int((jax_pred == torch_pred).sum())
        worst = max(worst, float(np.abs(jax_logits - torch_logits).max(initial=0.0)))
        if on_batch is not None:
            on_batch(len(labels))
    if not count:
        raise ValueError(f"the {split} split of {splits.name} is empty")
    return DataAgreement(count, jax_correct / count, torch_correct / count, agree / count, worst)
