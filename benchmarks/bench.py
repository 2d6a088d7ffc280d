"""Benchmarks: the Flax SE-ResNets under ``jax.jit`` against the PyTorch twins (eager and
``torch.compile``), and the weight converter against a plain copy of the same bytes.

This script owns the measurement protocol and its report, nothing else: the models, the train
step and the optimizers come from ``seres_jax`` / ``seres_torch`` unchanged.

* **What is timed.** Per configuration and implementation: training-step throughput (forward,
  loss, backward, SGD update), inference throughput (eval mode), the first call of each (the
  compilation included), and peak memory. The data is fixed synthetic data already on the
  device, so the input pipeline is not measured.
* **Protocol.** First call, timed alone; ``--warmup`` untimed steps; then ``--repeats``
  repetitions of ``--steps`` steps, synchronised (``jax.block_until_ready``,
  ``torch.cuda.synchronize``) only at the end of each repetition; the median repetition gives
  the throughput.
* **Isolation.** The parent process imports neither JAX nor torch. Every (configuration,
  implementation) runs in a fresh child process (this script with the hidden ``--worker`` flag,
  answering with one JSON line), so peak RSS and first-call times are not polluted by another
  measurement, and compilation caches start cold (a fresh torch inductor/Triton cache directory
  per child; the JAX persistent cache is unset).

Run ``python benchmarks/bench.py --help``; ``benchmarks/README.md`` explains how to read the
output.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

IMPLS: tuple[str, ...] = ("jax", "torch_eager", "torch_compile")
IMPL_TITLES = {"jax": "JAX", "torch_eager": "PyTorch eager", "torch_compile": "torch.compile"}
DEVICES: tuple[str, ...] = ("cpu", "gpu", "tpu")
RESULT_PREFIX = "BENCH_RESULT "
HERE = Path(__file__).resolve().parent
MIB = 2**20

# The training recipe both frameworks run (seres' default SGD recipe, every leaf decayed as
# torch.optim.SGD does, so the two do the same arithmetic).
LR, MOMENTUM, WEIGHT_DECAY, NESTEROV = 0.1, 0.9, 5e-4, True

# ~50 M parameters: SEResNetTiny(base=272) has 50,445,096 (50,466,328 state_dict entries).
CONVERT_ARCH = "seresnet_tiny:base=272"


@dataclass(frozen=True)
class BenchConfig:
    """A model configuration to measure: a ``seres_jax.registry`` architecture string (the same
    string builds the Flax model and its PyTorch twin), its input and its default step count."""

    arch: str
    image_size: int
    batch: int
    steps: int  # timed steps per repetition unless --steps says otherwise
    description: str = ""


# Step counts keep the default run (all configurations, all implementations, 5 repetitions)
# well under 10 minutes on 2 CPU cores, where a JAX training step takes ~2 s (tiny) and ~5 s
# (wide); on an accelerator, where a step takes milliseconds, pass a larger --steps.
CONFIGS: dict[str, BenchConfig] = {
    "tiny": BenchConfig("seresnet_tiny", 32, 128, 2, "SEResNetTiny() defaults: base 32, n 2"),
    "wide": BenchConfig("seresnet_tiny:base=64,n=3", 32, 64, 1, "SEResNetTiny(base=64, n=3)"),
    # ImageNet-sized; ~12 GFLOP per training image, so opt-in on a CPU (--configs seresnet50).
    "seresnet50": BenchConfig("seresnet50", 224, 16, 1, "timm's seresnet50 (28.1 M params)"),
}
DEFAULT_CONFIGS = ("tiny", "wide")

QUICK = {"repeats": 1, "steps": 2, "warmup": 1, "batch": 8}


# ============================================================================ worker side


@dataclass
class _Runners:
    """What a worker needs from one implementation: ``train(n)`` / ``infer(n)`` run ``n``
    steps and wait for the device once at the end."""

    train: Callable[[int], None]
    infer: Callable[[int], None]
    device_peak_mib: Callable[[], float | None]
    params: int
    precision: str
    info: dict[str, Any] = field(default_factory=dict)


def _maxrss_mib() -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / MIB if sys.platform == "darwin" else value / 1024


def _error_text(err: BaseException) -> str:
    # Inductor errors run to pages; the head says what failed.
    return f"{type(err).__name__}: {err}".strip()[:2000]


def _synthetic_batch(spec: dict[str, Any], in_ch: int, num_classes: int) -> tuple[Any, Any]:
    """Fixed NHWC float32 images (standard normal) and int32 labels, identical for every
    implementation (same seed); torch gets the NCHW transpose of the same images."""
    import numpy as np

    rng = np.random.default_rng(spec["seed"])
    size = spec["image_size"]
    images = rng.standard_normal((spec["batch"], size, size, in_ch), dtype=np.float32)
    labels = rng.integers(0, num_classes, spec["batch"]).astype(np.int32)
    return images, labels


def _jax_runners(spec: dict[str, Any]) -> _Runners:
    import jax
    import jax.numpy as jnp

    from seres_jax import compiler, optim
    from seres_jax.registry import build_flax, model_config
    from seres_jax.train import TrainState, init_variables, train_step

    device = jax.devices(spec["device"])[0]
    dtype = jnp.bfloat16 if spec["bf16"] else None  # bf16 compute, float32 params and stats
    model = build_flax(spec["arch"], dtype=dtype)
    arch_spec, arguments = model_config(spec["arch"])
    in_ch = arguments[arch_spec.in_channels_arg]
    images, labels = _synthetic_batch(spec, in_ch, arguments["num_classes"])
    with jax.default_device(device):
        size = spec["image_size"]
        variables = init_variables(model, (size, size, in_ch), spec["seed"])
        variables = jax.device_put(variables, device)
        tx = optim.sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV)
        state = TrainState.create(model.apply, variables, tx)
    del variables  # the state holds them; nothing else may keep donated buffers alive
    x, y = jax.device_put(images, device), jax.device_put(labels, device)
    params = sum(int(p.size) for p in jax.tree.leaves(state.params))

    # The state is donated: XLA updates parameters and optimizer state in place. Compiled as
    # seres compiles its own steps (seres_jax.compiler: XLA options on the CPU).
    platform = device.platform
    train_fn = compiler.jit(train_step, platform=platform, donate_argnums=0)
    infer_fn = compiler.jit(
        lambda v, images: model.apply(v, images, train=False), platform=platform
    )

    def train(n: int) -> None:
        nonlocal state
        metrics = None
        for _ in range(n):
            state, metrics = train_fn(state, x, y)
        jax.block_until_ready((state, metrics))

    def infer(n: int) -> None:
        # Keep every output and wait for all of them: the calls are independent, so waiting
        # for the last alone would not prove the others finished.
        variables = state.variables
        jax.block_until_ready([infer_fn(variables, x) for _ in range(n)])

    def device_peak_mib() -> float | None:
        try:
            stats = device.memory_stats()  # None on the CPU backend
        except Exception:
            return None
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return stats["peak_bytes_in_use"] / MIB

    info = {
        "device": str(device),
        "device_kind": device.device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "compiler_options": compiler.compiler_options(platform),
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", ""),
    }
    return _Runners(train, infer, device_peak_mib, params, "bf16" if dtype else "fp32", info)


def _torch_runners(spec: dict[str, Any], compiled: bool) -> _Runners:
    import torch
    import torch.nn.functional as F

    from seres_jax.registry import build_torch, model_config

    if spec["device"] == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("--device gpu: this torch build sees no CUDA device")
        dev = torch.device("cuda")
    else:
        dev = torch.device("cpu")
    cuda = dev.type == "cuda"
    arch_spec, arguments = model_config(spec["arch"])
    in_ch = arguments[arch_spec.in_channels_arg]
    images, labels = _synthetic_batch(spec, in_ch, arguments["num_classes"])
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dev)  # NHWC -> NCHW
    y = torch.from_numpy(labels.astype("int64")).to(dev)
    torch.manual_seed(spec["seed"])
    model = build_torch(spec["arch"]).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV
    )
    # torch.compile is lazy: a failure shows at the first call, inside the timed phase.
    net = torch.compile(model) if compiled else model
    # bf16 uses autocast, on CUDA only: CPU autocast is a different code path with its own
    # op coverage, so on the CPU torch runs float32 and says so (precision="fp32").
    use_autocast = spec["bf16"] and cuda

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if use_autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def train(n: int) -> None:
        model.train()
        for _ in range(n):
            with autocast():
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()

    def infer(n: int) -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            for _ in range(n):
                net(x)
        sync()

    def device_peak_mib() -> float | None:
        return torch.cuda.max_memory_allocated() / MIB if cuda else None

    info = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else None,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
    }
    precision = "bf16" if use_autocast else "fp32"
    return _Runners(train, infer, device_peak_mib, params, precision, info)


def _measure(run: Callable[[int], None], batch: int, spec: dict[str, Any]) -> dict[str, Any]:
    """First call alone, warm-up, then ``repeats`` x ``steps`` steps; median throughput."""
    start = time.perf_counter()
    run(1)
    first = time.perf_counter() - start
    if spec["warmup"]:
        run(spec["warmup"])
    reps = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        run(spec["steps"])
        reps.append(time.perf_counter() - start)
    return {
        "first_step_s": first,
        "rep_s": reps,
        "img_s": batch * spec["steps"] / statistics.median(reps),
    }


def _model_worker(spec: dict[str, Any]) -> dict[str, Any]:
    impl = spec["impl"]
    # Imports are done here so the peak RSS of the imports alone is on record.
    if impl == "jax":
        import jax  # noqa: F401
    else:
        import torch  # noqa: F401
    import_rss = _maxrss_mib()
    runners = _jax_runners(spec) if impl == "jax" else _torch_runners(spec, impl == "torch_compile")
    result: dict[str, Any] = {
        "impl": impl,
        "params": runners.params,
        "precision": runners.precision,
        "info": runners.info,
        "errors": {},
    }
    for phase, run in (("train", runners.train), ("infer", runners.infer)):
        try:
            result[phase] = _measure(run, spec["batch"], spec)
        except Exception as err:
            # e.g. torch.compile without a working C++ compiler: record and carry on.
            result["errors"][phase] = _error_text(err)
            traceback.print_exc()
    result["peak_rss_mib"] = _maxrss_mib()
    # Inductor's helper processes (compile workers, the C++ compiler) are not counted: a
    # child's ru_maxrss starts from the RSS it was forked with, so RUSAGE_CHILDREN would
    # report the parent's memory again.
    result["import_rss_mib"] = import_rss
    result["device_peak_mib"] = runners.device_peak_mib()
    return result


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one untimed run; each result
    is released outside the timed region."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        del out
    return statistics.median(times)


def _convert_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from seres_jax.convert import flax_to_state_dict, torch_to_flax
    from seres_jax.registry import build_torch

    torch.manual_seed(0)
    model = build_torch(spec["arch"])
    params = sum(p.numel() for p in model.parameters())
    state_dict = model.state_dict()
    arrays = [t.detach().numpy() for t in state_dict.values()]  # views, no copy
    nbytes = sum(a.nbytes for a in arrays)
    variables = torch_to_flax(state_dict)  # numpy arrays: the reverse direction times no transfer
    repeats = spec["repeats"]

    # The converter allocates a fresh array per tensor and writes it (a transposed copy for
    # kernels), so the fair baseline allocates and copies too: arr.copy() per array.
    copy_s = _median_seconds(lambda: [a.copy() for a in arrays], repeats)
    # For reference only: the same bytes into preallocated arrays (no allocation, no page
    # faults), an upper bound on what any copy can reach.
    targets = [np.empty_like(a) for a in arrays]

    def copy_into() -> None:
        for dst, src in zip(targets, arrays, strict=True):
            np.copyto(dst, src)

    copyto_s = _median_seconds(copy_into, repeats)
    to_flax_s = _median_seconds(lambda: torch_to_flax(state_dict), repeats)
    to_torch_s = _median_seconds(lambda: flax_to_state_dict(variables), repeats)
    mb = nbytes / 1e6
    return {
        "arch": spec["arch"],
        "params": params,
        "tensors": len(arrays),
        "bytes": nbytes,
        "repeats": repeats,
        "seconds": {
            "torch_to_flax": to_flax_s,
            "flax_to_state_dict": to_torch_s,
            "copy": copy_s,
            "copyto_preallocated": copyto_s,
        },
        "mb_s": {
            "torch_to_flax": mb / to_flax_s,
            "flax_to_state_dict": mb / to_torch_s,
            "copy": mb / copy_s,
            "copyto_preallocated": mb / copyto_s,
        },
        "peak_rss_mib": _maxrss_mib(),
    }


def _worker_main(spec_json: str) -> int:
    """Child-process entry: measure what ``spec`` says, print one ``RESULT_PREFIX`` JSON line."""
    spec = json.loads(spec_json)
    try:
        result = _convert_worker(spec) if spec["kind"] == "convert" else _model_worker(spec)
    except Exception as err:
        traceback.print_exc()
        result = {"fatal": _error_text(err)}
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# ============================================================================ parent side


def _log(message: str) -> None:
    # Progress goes to stderr so stdout carries the Markdown table alone.
    print(message, file=sys.stderr, flush=True)


def _worker_env(kind: str, impl: str | None, device: str, cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Cold compilation caches, so first-call times include the whole compilation.
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")
    env["TRITON_CACHE_DIR"] = str(cache_dir / "triton")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    # JAX computes only in the jax worker on the chosen device; elsewhere (torch imports
    # seres_jax.registry, the converter uses numpy) it must not claim an accelerator.
    if kind == "convert" or impl != "jax" or device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _run_worker(spec: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"fatal": f"worker timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    return {"fatal": f"worker exited with status {proc.returncode}: {tail}"[:2000]}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Library versions from the installed metadata (the parent imports neither framework)."""
    found = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "flax", "optax", "torch", "numpy"):
        found[package] = _version(package)
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cmd = ["sysctl", "-n", "machdep.cpu.brand_string"]
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """The host: CPU model, core counts, memory, OS (accelerators are added by the workers)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(ValueError, OSError, AttributeError):
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    return info


def _empty_entry(name: str, config: BenchConfig, batch: int, steps: int) -> dict[str, Any]:
    return {
        "arch": config.arch,
        "description": config.description,
        "image_size": config.image_size,
        "batch": batch,
        "steps": steps,
        "params": None,
        "params_by_impl": dict.fromkeys(IMPLS),
        "train_img_s": dict.fromkeys(IMPLS),
        "infer_img_s": dict.fromkeys(IMPLS),
        "first_step_s": {impl: {"train": None, "infer": None} for impl in IMPLS},
        "peak_mem_mib": dict.fromkeys(IMPLS),
        "device_peak_mib": dict.fromkeys(IMPLS),
        "precision": dict.fromkeys(IMPLS),
        "errors": {},
        "skipped": {},
        "runs": {},
    }


def _fill_entry(entry: dict[str, Any], impl: str, result: dict[str, Any]) -> None:
    entry["runs"][impl] = result
    if "fatal" in result:
        entry["errors"][impl] = result["fatal"]
        return
    entry["params"] = entry["params"] or result["params"]
    entry["params_by_impl"][impl] = result["params"]
    entry["precision"][impl] = result["precision"]
    for phase, key in (("train", "train_img_s"), ("infer", "infer_img_s")):
        if phase in result:
            entry[key][impl] = result[phase]["img_s"]
            entry["first_step_s"][impl][phase] = result[phase]["first_step_s"]
    entry["peak_mem_mib"][impl] = result["peak_rss_mib"]
    entry["device_peak_mib"][impl] = result["device_peak_mib"]
    if result["errors"]:
        entry["errors"][impl] = "; ".join(f"{k}: {v}" for k, v in result["errors"].items())


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _add_ratios(entry: dict[str, Any]) -> None:
    """JAX ÷ other for every metric: > 1 means JAX is faster in img/s, slower in seconds,
    larger in MiB."""
    for other in ("torch_eager", "torch_compile"):
        entry[f"jax_vs_{other}"] = {
            "train_img_s": _ratio(entry["train_img_s"]["jax"], entry["train_img_s"][other]),
            "infer_img_s": _ratio(entry["infer_img_s"]["jax"], entry["infer_img_s"][other]),
            "first_step_train_s": _ratio(
                entry["first_step_s"]["jax"]["train"], entry["first_step_s"][other]["train"]
            ),
            "first_step_infer_s": _ratio(
                entry["first_step_s"]["jax"]["infer"], entry["first_step_s"][other]["infer"]
            ),
            "peak_mem_mib": _ratio(entry["peak_mem_mib"]["jax"], entry["peak_mem_mib"][other]),
        }


# ---------------------------------------------------------------------------- Markdown


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "s":
        return f"{value:.2f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _cell(entry: dict[str, Any], impl: str, value: float | None, kind: str) -> str:
    if value is not None:
        return _fmt(value, kind)
    if impl in entry["skipped"]:
        return "skipped"
    return "error" if impl in entry["errors"] else "–"


def _metric_rows(entry: dict[str, Any]) -> Iterator[tuple[str, dict[str, float | None], str]]:
    yield "train img/s", entry["train_img_s"], "img_s"
    yield "infer img/s", entry["infer_img_s"], "img_s"
    first = entry["first_step_s"]
    yield "first train step s", {i: first[i]["train"] for i in IMPLS}, "s"
    yield "first infer step s", {i: first[i]["infer"] for i in IMPLS}, "s"
    yield "peak RSS MiB", entry["peak_mem_mib"], "mib"
    if any(v is not None for v in entry["device_peak_mib"].values()):
        yield "device peak MiB", entry["device_peak_mib"], "mib"


def render_markdown(results: dict[str, Any]) -> str:
    """The report: machine and versions, one table of all configurations, the converter."""
    m, v, s = results["machine"], results["versions"], results["settings"]
    accel = ", ".join(f"{k}: {d}" for k, d in m.get("accelerators", {}).items()) or "none"
    lines = [
        "# seres benchmark",
        "",
        f"- **machine**: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m.get('memory_gib', '?')} GiB, {m['platform']}; load average (1, 5, 15 min) "
        f"{m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end",
        f"- **devices**: --device {s['device']}; {accel}",
        "- **versions**: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- **protocol**: median of {s['repeats']} repetitions × steps (per configuration, "
        f"below), {s['warmup']} warm-up step(s) excluded; first call timed alone"
        + (" — **--quick smoke test, not a measurement**" if s["quick"] else ""),
        f"- **precision**: {'bf16 requested' if s['bf16'] else 'float32'}; "
        f"jax_default_matmul_precision={s['jax'].get('jax_default_matmul_precision')}; "
        f"torch threads {s['torch'].get('num_threads', '?')}, "
        f"float32_matmul_precision={s['torch'].get('float32_matmul_precision', '?')}, "
        f"cudnn.benchmark={s['torch'].get('cudnn_benchmark', '?')}",
        f"- **XLA**: compiler options {s['jax'].get('compiler_options') or 'none (XLA defaults)'}"
        f"; XLA_FLAGS={s['jax'].get('XLA_FLAGS') or '(unset)'}",
        "",
        "Ratios are JAX ÷ PyTorch: above 1 JAX is faster in img/s, slower in seconds, "
        "larger in MiB.",
        "",
        "| config | metric | JAX | PyTorch eager | torch.compile | JAX/eager | JAX/compile |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for name, entry in results["configs"].items():
        params = f"{entry['params'] / 1e6:.2f} M params" if entry["params"] else "? params"
        size = entry["image_size"]
        label = f"{name} ({size}×{size}, batch {entry['batch']}, {entry['steps']} steps, {params})"
        for metric, values, kind in _metric_rows(entry):
            cells = [_cell(entry, impl, values[impl], kind) for impl in IMPLS]
            ratios = [_fmt(_ratio(values["jax"], values[o]), "ratio") for o in IMPLS[1:]]
            lines.append(f"| {label} | {metric} | " + " | ".join(cells + ratios) + " |")
            label = ""
        counts = {i: n for i, n in entry["params_by_impl"].items() if n}
        if len(set(counts.values())) > 1:
            notes.append(f"{name}: parameter counts differ: {counts}")
        precisions = {i: p for i, p in entry["precision"].items() if p}
        if len(set(precisions.values())) > 1:
            notes.append(f"{name}: precisions differ: {precisions}")
        for impl, reason in entry["skipped"].items():
            notes.append(f"{name} / {impl}: skipped ({reason})")
        for impl, error in entry["errors"].items():
            first_line = error.splitlines()[0] if error else ""
            notes.append(f"{name} / {impl}: error: {first_line[:160]}")
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    conv = results.get("converter")
    if conv and "fatal" not in conv:
        mb_s = conv["mb_s"]
        lines += [
            "",
            f"## Converter ({conv['arch']}: {conv['params']:,} parameters, "
            f"{conv['bytes'] / 1e6:,.0f} MB in {conv['tensors']} tensors, "
            f"median of {conv['repeats']})",
            "",
            "| operation | MB/s | ÷ plain copy |",
            "| --- | ---: | ---: |",
        ]
        rows = [
            ("`torch_to_flax(state_dict)`", "torch_to_flax"),
            ("`flax_to_state_dict(variables)`", "flax_to_state_dict"),
            ("plain copy (`arr.copy()` per tensor)", "copy"),
            ("`np.copyto` into preallocated arrays (reference)", "copyto_preallocated"),
        ]
        for title, key in rows:
            ratio = _fmt(mb_s[key] / mb_s["copy"], "ratio")
            lines.append(f"| {title} | {mb_s[key]:,.0f} | {ratio} |")
    elif conv:
        lines += ["", f"Converter: error: {conv['fatal'].splitlines()[0][:160]}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- CLI


def _csv(valid: tuple[str, ...] | list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown or empty {unknown or text!r}; choose from {', '.join(valid)}"
            )
        return names

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Throughput, first-call time and peak memory of the seres SE-ResNets in "
        "JAX, PyTorch eager and torch.compile, and the weight converter's speed.",
    )
    parser.add_argument(
        "--configs",
        type=_csv(list(CONFIGS)),
        default=list(DEFAULT_CONFIGS),
        help=f"comma-separated configurations of {','.join(CONFIGS)} "
        f"(default: {','.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument(
        "--impls",
        type=_csv(IMPLS),
        default=list(IMPLS),
        help=f"comma-separated implementations (default: {','.join(IMPLS)})",
    )
    parser.add_argument("--repeats", type=_positive, default=5, help="timed repetitions (5)")
    parser.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="steps per repetition (default: each configuration's own, sized for 2 CPU cores)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps after the first call (1)"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="JAX platform; torch uses CUDA on gpu and is skipped on tpu (default: cpu)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 compute, float32 params (JAX: dtype=bfloat16; torch: autocast, CUDA only)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 repetition of 2 steps, batch 8, converter 1 repetition",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="JSON output")
    parser.add_argument(
        "--markdown", type=Path, default=HERE / "results.md", help="Markdown output"
    )
    parser.add_argument("--skip-convert", action="store_true", help="skip the converter")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data and init seed")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds allowed per child process"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def run_benchmarks(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested measurement, each in its own child process; returns the results."""
    repeats = QUICK["repeats"] if args.quick else args.repeats
    warmup = QUICK["warmup"] if args.quick else args.warmup
    machine = machine_info()
    machine["accelerators"] = {}
    # Other work on the machine distorts everything (torch's OpenMP threads most of all):
    # the load average before and after lets a reader judge.
    machine["loadavg_start"] = _loadavg()
    results: dict[str, Any] = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "machine": machine,
        "versions": versions(),
        "settings": {
            "device": args.device,
            "bf16": args.bf16,
            "quick": args.quick,
            "repeats": repeats,
            "warmup": warmup,
            "seed": args.seed,
            "caches": "cold: fresh TORCHINDUCTOR_CACHE_DIR/TRITON_CACHE_DIR per child, "
            "JAX_COMPILATION_CACHE_DIR unset",
            "recipe": {
                "optimizer": "sgd",
                "lr": LR,
                "momentum": MOMENTUM,
                "weight_decay": WEIGHT_DECAY,
                "nesterov": NESTEROV,
            },
            "torch_compile": "torch.compile(model), default mode; loss, backward and the "
            "optimizer step run eagerly around it",
            "jax": {},
            "torch": {},
        },
        "configs": {},
    }
    with tempfile.TemporaryDirectory(prefix="seres-bench-") as tmp:
        for name in args.configs:
            config = CONFIGS[name]
            batch = min(config.batch, QUICK["batch"]) if args.quick else config.batch
            steps = QUICK["steps"] if args.quick else (args.steps or config.steps)
            entry = _empty_entry(name, config, batch, steps)
            for impl in IMPLS:
                if impl not in args.impls:
                    entry["skipped"][impl] = "not in --impls"
                    continue
                if args.device == "tpu" and impl != "jax":
                    entry["skipped"][impl] = "--device tpu measures JAX only"
                    continue
                spec = {
                    "kind": "model",
                    "impl": impl,
                    "arch": config.arch,
                    "image_size": config.image_size,
                    "batch": batch,
                    "steps": steps,
                    "repeats": repeats,
                    "warmup": warmup,
                    "device": args.device,
                    "bf16": args.bf16,
                    "seed": args.seed,
                }
                _log(f"[{name}] {impl}: batch {batch}, {repeats} x {steps} steps ...")
                cache = Path(tmp) / f"{name}-{impl}"
                env = _worker_env("model", impl, args.device, cache)
                start = time.perf_counter()
                result = _run_worker(spec, env, args.timeout)
                _fill_entry(entry, impl, result)
                train = entry["train_img_s"][impl]
                status = f"train {train:.1f} img/s" if train else "no train number"
                if impl in entry["errors"]:
                    status += " (with errors)"
                _log(f"[{name}] {impl}: {status}, {time.perf_counter() - start:.0f} s")
                if "info" in result:
                    framework = "jax" if impl == "jax" else "torch"
                    results["settings"][framework].update(result["info"])
                    info = result["info"]
                    device_name = info.get("device_kind") or info.get("device_name")
                    if args.device != "cpu":
                        machine["accelerators"][framework] = device_name
            _add_ratios(entry)
            results["configs"][name] = entry

        if not args.skip_convert:
            _log(f"[convert] {CONVERT_ARCH}, median of {repeats} ...")
            spec = {"kind": "convert", "arch": CONVERT_ARCH, "repeats": repeats}
            env = _worker_env("convert", None, args.device, Path(tmp) / "convert")
            results["converter"] = conv = _run_worker(spec, env, args.timeout)
            if "fatal" not in conv:
                mb_s = conv["mb_s"]
                _log(f"[convert] {conv['params']:,} parameters, {conv['bytes'] / 1e6:,.0f} MB")
                shared = {
                    "convert_mb_s": mb_s["torch_to_flax"],
                    "convert_back_mb_s": mb_s["flax_to_state_dict"],
                    "memcpy_mb_s": mb_s["copy"],
                    "convert_vs_memcpy": mb_s["torch_to_flax"] / mb_s["copy"],
                    "convert_back_vs_memcpy": mb_s["flax_to_state_dict"] / mb_s["copy"],
                }
                results.update(shared)
                # The issue asks for the converter numbers in every configuration's entry
                # too; they are shared (the converter does not depend on the configuration).
                for entry in results["configs"].values():
                    entry["convert_mb_s"] = shared["convert_mb_s"]
                    entry["memcpy_mb_s"] = shared["memcpy_mb_s"]
            else:
                _log(f"[convert] error: {conv['fatal'].splitlines()[0]}")
    machine["loadavg_end"] = _loadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        return _worker_main(args.worker)
    results = run_benchmarks(args)
    markdown = render_markdown(results)
    for path, text in (
        (args.json, json.dumps(results, indent=2) + "\n"),
        (args.markdown, markdown),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(markdown, end="")
    _log(f"wrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
