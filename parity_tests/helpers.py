"""Test helpers: seeded inputs, parity assertions, CIFAR-10 binary files, whether torch is here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from seres_jax.parity import FP32_TOL, ParityResult, Tolerance

# Without torch (a TPU VM) the tests marked requires_torch skip; their modules import torch and
# seres_torch only under `if HAVE_TORCH:`, so a stray import fails the torch-free run.
HAVE_TORCH = importlib.util.find_spec("torch") is not None
# PyTorch outputs recorded by fixtures/record_torch_fixtures.py, for the torch-free tests.
TORCH_REFERENCE = Path(__file__).parent / "fixtures" / "torch_reference.safetensors"


def nchw_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# Worst error of each kind over the whole run, per tolerance class; printed by conftest.
WORST: dict[str, dict[str, float]] = {}


def assert_parity(result: ParityResult, tol: Tolerance = FP32_TOL, label: str = "fp32") -> None:
    worst = WORST.setdefault(label, {})
    for kind, err in result.worst().items():
        worst[kind] = max(worst.get(kind, 0.0), err)
    failures = result.failures(tol)
    assert not failures, "parity broken:\n" + "\n".join(failures)


RECORD = 3073  # CIFAR-10 binary: 1 label byte + 3 x 32 x 32 pixel bytes
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]


def cifar_records(rng: np.random.Generator, count: int, labels: Any = None) -> np.ndarray:
    """`count` CIFAR records as a (count, 3073) uint8 array."""
    records = rng.integers(0, 256, (count, RECORD), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 10, count) if labels is None else labels
    return records


def write_cifar10(
    directory: Path, train_records: int = 7, test_records: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes a tiny binary CIFAR-10 tree; returns the records written per file."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in TRAIN_FILES:
        written[name] = cifar_records(rng, train_records)
    written["test_batch.bin"] = cifar_records(rng, test_records)
    # A landmark: record 3 of data_batch_2, blue channel (2), row 5, col 7 -> 200.
    written["data_batch_2.bin"][3, 1 + 2 * 1024 + 5 * 32 + 7] = 200
    for name, records in written.items():
        records.tofile(directory / name)
    return written


def torch_bf16_error(model: Any, x: np.ndarray, seed: int = 0) -> dict[str, float]:
    """How far PyTorch's own bfloat16 autocast (CPU) strays from its float32 run in eval mode,
    with ``compare_modules``'s cotangent: the yardstick for a deep network in bfloat16."""
    import copy

    import torch

    from seres_jax.parity import relative_error

    runs = []
    for enabled in (True, False):
        m = copy.deepcopy(model).eval()
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = m(xt).float()
        ct = np.random.default_rng(seed).standard_normal(tuple(out.shape)).astype(np.float32)
        out.backward(torch.from_numpy(ct))
        runs.append((out.detach().numpy(), xt.grad.numpy(), dict(m.named_parameters())))
    (o16, g16, p16), (o32, g32, p32) = runs
    return {
        "output": relative_error(o16, o32),
        "input_grad": relative_error(g16, g32),
        "param_grad": max(
            relative_error(p16[k].grad.float().numpy(), p32[k].grad.numpy()) for k in p32
        ),
    }


def torch_fp32_error(model: Any, x: np.ndarray, train: bool, seed: int = 0) -> dict[str, float]:
    """How far PyTorch's own float32 run is from its float64 run (same cotangent as
    ``compare_modules``): the yardstick for a deep network's rounding."""
    import copy

    import torch

    from seres_jax.parity import relative_error

    runs = {}
    for dtype in (torch.float32, torch.float64):
        m = copy.deepcopy(model).to(dtype).train(train)
        xt = torch.from_numpy(x).to(dtype).requires_grad_(True)
        out = m(xt)
        ct = np.random.default_rng(seed).standard_normal(tuple(out.shape))
        out.backward(torch.from_numpy(ct).to(dtype))
        runs[dtype] = (out, xt.grad, {k: p.grad for k, p in m.named_parameters()})
    (o32, g32, p32), (o64, g64, p64) = runs[torch.float32], runs[torch.float64]

    def err(a: torch.Tensor, b: torch.Tensor) -> float:
        return relative_error(a.detach().double().numpy(), b.detach().double().numpy())

    return {
        "output": err(o32, o64),
        "input_grad": err(g32, g64),
        "param_grad": max(err(p32[k], p64[k]) for k in p32),
    }


def settle_batchnorm(model: Any, x: np.ndarray) -> Any:
    """A copy of ``model`` whose running statistics are ``x``'s batch statistics (one train-mode
    pass at momentum 1), as after training. Random statistics (``randomize_batchnorm``) do not
    match the activations they normalise; through 200+ residual blocks the mismatch compounds
    (eval logits ~1e5 in seresnet200d) until float32 itself is meaningless, in PyTorch as much
    as in JAX. Affine parameters stay as they are, and the statistics are still neither 0 nor 1."""
    import copy

    import torch

    settled = copy.deepcopy(model).train(True)
    norms = [m for m in settled.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        settled(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return settled


def assert_as_accurate_as_torch(torch_model: Any, flax_model: Any, x: np.ndarray) -> None:
    """A deep network in both modes: JAX float32 against PyTorch float64 must stay within 10x
    of PyTorch float32's own error (plus 1e-6); fixed gates do not hold at this depth. Eval mode
    runs on statistics settled on ``x`` (see ``settle_batchnorm``)."""
    import torch

    from seres_jax.parity import compare_modules

    torch_model = settle_batchnorm(torch_model, x)
    for train in (False, True):
        ours = compare_modules(
            torch_model, flax_model, x, train=train, reference_dtype=torch.float64
        ).worst()
        theirs = torch_fp32_error(torch_model, x, train)
        print("train" if train else "eval", "jax", ours, "torch fp32", theirs)
        for kind, err in theirs.items():
            assert ours[kind] <= 10 * err + 1e-6, (kind, ours[kind], err)


# --------------------------------------------------------------------------- child processes


def cpu_devices_env(count: int, **extra: str) -> dict[str, str]:
    """The environment of a child process that sees ``count`` virtual CPU devices."""
    flags = f"--xla_force_host_platform_device_count={count}"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", **extra}


def run_json_script(script: str, *args: str, devices: int, timeout: int, **extra: str) -> Any:
    """``python -c script *args`` on ``devices`` virtual CPU devices; its last line, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True,
        env=cpu_devices_env(devices, **extra), timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- reduced models

# Reduced sizes of a registered architecture, applied to whichever of these constructor
# arguments it has; the rest (block type, grouped or not, stem, attention) stay as registered.
# No dropout: PyTorch's random mask cannot be matched.
REDUCED = dict(
    base=8, n=1, channels=(16, 32, 64, 128), stem_width=8, layers=(1, 1, 1, 1), num_classes=10,
    drop_rate=0.0,
)  # fmt: skip
# Odd: exercises the ceil-mode average-pool downsampling; leaves the zoo's last stage 2×2.
IMAGE = 35


def reduced_arguments(name: str) -> dict[str, Any]:
    """The constructor overrides that shrink the registered ``name`` for a fast parity check."""
    from seres_jax.registry import MODELS

    arguments = MODELS[name].arguments()
    reduced = {key: value for key, value in REDUCED.items() if key in arguments}
    if arguments.get("cardinality", 1) > 1:
        reduced["cardinality"] = 4  # still grouped: 32 groups are slow on the CPU
    if arguments.get("block_widths") is not None:
        reduced["block_widths"] = None  # a pruned model's widths are per block of its depth
    if arguments.get("block_reduce_first", 1) > 1:
        reduced["base_width"] = 16
    return reduced


def image_shape(name: str, batch: int = 1, **overrides: Any) -> tuple[int, int, int, int]:
    """An NCHW input shape for the registered ``name``: ``IMAGE`` (odd) pixels a side, or 64
    for timm's anti-aliased models, whose pools need sides that are multiples of 32."""
    from seres_jax.registry import model_config

    spec, arguments = model_config(name, **overrides)
    side = 64 if arguments.get("aa_layer") else IMAGE
    return (batch, arguments[spec.in_channels_arg], side, side)


def reduced_case(name: str) -> tuple[Any, Any, np.ndarray]:
    """``name`` reduced, as ``test_registry`` compares it and ``zoo_report`` reports it: the
    PyTorch model (seeded weights, randomised BatchNorm), its Flax twin, and a kink-free input
    of two images."""
    import torch

    from seres_jax.parity import kink_free_input, randomize_batchnorm
    from seres_jax.registry import build_flax, build_torch

    kwargs = reduced_arguments(name)
    torch.manual_seed(0)
    model = randomize_batchnorm(build_torch(name, **kwargs), seed=5)
    x = kink_free_input(model, image_shape(name, 2, **kwargs))
    return model, build_flax(name, **kwargs), x


# --------------------------------------------------------------------------- `seres` runs

TINY_ARCH = "seresnet_tiny:base=4,n=1,reduction=4"  # digits at batch 256: 5 steps an epoch


def train_tiny(workdir: Path, *extra: str) -> int:
    """``seres train`` of a tiny network on the digits into ``workdir``, in this process."""
    from seres_cli.main import main

    return main([
        "train", "--model", TINY_ARCH, "--batch-size", "256", "--epochs", "1", "--no-progress",
        "--workdir", str(workdir), *extra,
    ])  # fmt: skip


def run_record(config: Any, arch: str) -> dict[str, Any]:
    """``config.json`` as ``seres train`` writes it for the ``TrainConfig`` ``config``: the
    resolved config (its lr, its augmentation decided), the architecture, the software, and the
    preprocessing it trains and validates with; for tests that lay out a run without training."""
    import dataclasses

    options = config.data_options()
    data = {"train": dataclasses.asdict(options.data_config),
            "val": dataclasses.asdict(options.val_config or options.data_config)}  # fmt: skip
    resolved = dataclasses.replace(config.resolved(), augment=config.augments)
    return {"config": dataclasses.asdict(resolved), "arch": arch, "versions": {"seres": "x"},
            "device_count": 1, "overrides": [], "data": data}  # fmt: skip


def one_error_line(capsys: Any, code: int) -> str:
    """The one ``seres: error:`` line a refused command wrote (exit status 2)."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seres: error: "), err
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path below ``directory`` with its bytes (``None`` for a directory)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
    }


# `python -c KILLABLE POINT N ARGV...`: `seres ARGV`, SIGKILLed right after its Nth metrics
# write (POINT "metrics") or checkpoint (POINT "checkpoint").
KILLABLE = textwrap.dedent(
    """
    import os, signal, sys
    import seres_jax.train.loop as loop
    from seres_cli.main import main

    point, count = sys.argv[1], int(sys.argv[2])
    owner, name = {"metrics": (loop, "_write_metrics"),
                   "checkpoint": (loop._Checkpoints, "save")}[point]
    original, calls = getattr(owner, name), []

    def killed_after(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, killed_after)
    sys.exit(main(sys.argv[3:]))
    """
)
