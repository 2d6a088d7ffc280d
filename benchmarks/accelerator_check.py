"""One prepared check of a GPU or TPU machine: parity, speed and a training smoke run, each
stage in child processes with its own time budget, everything written to ``--out DIR``.

    PYTHONPATH=. python benchmarks/accelerator_check.py --out DIR         # < 8 min on one GPU
    PYTHONPATH=. python benchmarks/accelerator_check.py --out DIR --cpu-smoke   # toy sizes, CPU

Nothing is installed: the preinstalled packages are used and a missing optional one (torch,
timm, hypothesis, grain, ...) skips what needs it with one line. Stages, in order:

1. **environment**: platform, device kind and count, library versions, CUDA/cuDNN where seen.
2. **parity**: the parity suite's modules that run on ``jax_device`` (``--cpu-smoke``: a few
   cases) with JAX on the accelerator (its CPU cases deselected) against PyTorch on the CPU in
   float32 (TF32 off, ``jax_default_matmul_precision="highest"``: the suite's conftest), the
   bfloat16 cases against their bounds; then a second pass with the PyTorch reference on CUDA
   (``seres_bench.accel_pytest``). Modules that cannot be imported here are left out, named.
3. **speed**: a measured bf16 matmul peak, then ``seres_bench``'s runners (JAX jitted and
   sharded over the local devices, PyTorch eager with channels_last and bf16 autocast,
   ``torch.compile``) on ``seresnet50`` at 224 x 224, batch 256 and 128, and ``SEResNetTiny``
   at 32 x 32, batch 1024: training and inference images/s, first-step times, TFLOP/s and MFU
   (FLOPs from XLA's cost analysis of the compiled JAX step, per device).
4. **training**: ``seres train`` on synthetic data (``seresnet50``, 224 px): N steps with a
   checkpoint, ``--resume`` for M more, and an uninterrupted N + M step run; the loss must go
   down and the resumed run's metrics must match the uninterrupted run's.

A stage that runs out of time keeps what it measured (``"status": "partial"``). Output:
``DIR/accelerator_check.json``, ``DIR/accelerator_check.md`` (also printed) and the pytest logs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from seres_bench.machine import loadavg, machine_info, versions
from seres_bench.worker import WORKERS, run_worker, worker_env, worker_main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENTRY = Path(__file__).resolve()
STAGES = ("environment", "parity", "speed", "training")

# What each run measures. The budgets (seconds) of the full run add up to 7 min 40 s.
FULL: dict[str, Any] = {
    "budgets": {"environment": 30, "parity": 130, "speed": 200, "training": 100},
    "parity_pass1_share": 0.65,  # of the parity budget; the second pass gets the rest
    "parity_tests": None,  # the modules that use the jax_device fixture
    "parity_pass2_tests": None,  # the same
    "matmul_sizes": (4096, 8192, 16384),
    "speed_configs": (  # name, arch, image size, batch; measured in this order
        ("seresnet50_b256", "seresnet50", 224, 256),
        ("seresnet50_b128", "seresnet50", 224, 128),
        ("tiny_b1024", "seresnet_tiny", 32, 1024),
    ),
    "speed_impls": ("jax", "torch_eager", "torch_compile"),
    "speed_protocol": {"steps": 20, "repeats": 3, "warmup": 2},
    "training": {
        "model": "seresnet50",
        "image_size": 224,
        "batch": 64,
        "first": 50,
        "more": 10,
        "precision": "bf16",
        "lr": 0.02,
    },
}
SMOKE_ARCH = "seresnet_tiny:base=8,n=1"
SMOKE: dict[str, Any] = {
    "budgets": {"environment": 10, "parity": 35, "speed": 30, "training": 45},
    "parity_pass1_share": 0.6,
    "parity_tests": (
        "parity_tests/test_layers.py::test_se_block_parity[cpu-64-16-4-shape0]",
        "parity_tests/test_models.py::test_bfloat16_compute_against_float32_reference"
        "[cpu-pre-eval]",
    ),
    "parity_pass2_tests": (
        "parity_tests/test_layers.py::test_se_block_parity[cpu-64-16-4-shape0]",
    ),
    "matmul_sizes": (256, 512),
    "speed_configs": (("toy_b16", SMOKE_ARCH, 32, 16),),
    # torch.compile's C++ build alone outlasts the smoke budget on a CPU.
    "speed_impls": ("jax", "torch_eager"),
    "speed_protocol": {"steps": 2, "repeats": 1, "warmup": 1},
    "training": {
        "model": SMOKE_ARCH,
        "image_size": 32,
        "batch": 256,
        "first": 8,
        "more": 4,
        "precision": "fp32",
        "lr": 0.02,
    },
}
# Packages a stage needs beyond jax/flax/optax/orbax: skipped with one line where absent.
TRAIN_PACKAGES = ("grain", "array_record", "PIL", "matplotlib", "tqdm")
OPTIONAL = ("torch", "timm", "hypothesis", *TRAIN_PACKAGES)
# The resumed run's metrics against the uninterrupted run's (relative).
RESUME_TOL = 1e-3


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _have(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _env(**extra: str) -> dict[str, str]:
    """The children's environment: the checkout and ``benchmarks/`` importable."""
    env = dict(os.environ)
    path = [str(ROOT), str(HERE), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env.update(extra)
    return env


def _run_logged(cmd: list[str], env: dict[str, str], timeout: float, log: Path) -> int | None:
    """``cmd`` with its output into ``log``; its exit status, or ``None`` if it ran out of
    time (then its whole process group is killed)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


class Stage:
    """A stage's deadline and record: ``status`` is done, partial (out of time or an error
    after some results), failed or skipped, with ``reason`` for all but done."""

    def __init__(self, name: str, budget: float, record: dict[str, Any]) -> None:
        self.name, self.budget = name, budget
        self.deadline = time.monotonic() + budget
        self.record = record
        record.update(status="running", budget_s=budget, notes=[])

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        self.record["notes"].append(text)
        _log(f"[{self.name}] {text}")

    def end(self, status: str, reason: str | None = None) -> None:
        if self.record["status"] != "running":
            return
        self.record["status"] = status
        if reason:
            self.record["reason"] = reason


# --------------------------------------------------------------------------- child processes


def env_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """What JAX (and torch, if installed) see: platform, devices, CUDA/cuDNN versions."""
    import jax

    devices = jax.devices()
    info: dict[str, Any] = {
        "platform": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }
    with contextlib.suppress(Exception):
        info["jax_environment"] = jax.print_environment_info(return_string=True)
    if _have("torch"):
        import torch

        cuda = torch.cuda.is_available()
        info["torch"] = {
            "cuda_available": cuda,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "device_name": torch.cuda.get_device_name(0) if cuda else None,
        }
    return info


def matmul_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The device's bf16 matmul peak: the best TFLOP/s of square matmuls of the given sizes
    (median of 3 repetitions of 10 products each)."""
    import statistics

    import jax
    import jax.numpy as jnp

    device = jax.devices(spec["device"])[0]
    product = jax.jit(lambda a, b: a @ b)
    by_size = {}
    for n in spec["sizes"]:
        with jax.default_device(device):
            a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
            b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
        product(a, b).block_until_ready()
        reps = []
        for _ in range(3):
            start = time.perf_counter()
            jax.block_until_ready([product(a, b) for _ in range(10)])
            reps.append((time.perf_counter() - start) / 10)
        by_size[str(n)] = 2 * n**3 / statistics.median(reps) / 1e12
    return {"tflops_by_size": by_size, "peak_tflops": max(by_size.values())}


class _Anything(type):
    """A class whose every public attribute is another such class: enough for a module's
    ``class T(grain.MapTransform)``, ``grain.A | grain.B`` or ``Image.Resampling.BILINEAR``."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Anything(name, (), {})


class _StubModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__ = []  # a package: its submodules are stubs too

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Anything(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.split(".")[0] not in self.names:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        return _StubModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install_stubs(packages: tuple[str, ...], force: bool = False) -> list[str]:
    """Inert stand-ins for the ``packages`` not installed (all of them with ``force``), so that
    ``seres_jax.train`` imports without the input pipeline's packages: the speed stage times
    the training step alone, which uses none of them. Returns the packages stubbed."""
    missing = tuple(p for p in packages if force or not _have(p))
    if missing:
        for name in [m for m in sys.modules if m.split(".")[0] in missing]:
            del sys.modules[name]
        sys.meta_path.insert(0, _StubFinder(missing))
    return list(missing)


def speed_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """``seres_bench``'s model worker, with stand-ins for missing input-pipeline packages."""
    stubbed = install_stubs(TRAIN_PACKAGES) if spec["impl"] == "jax" else []
    result = WORKERS["model"](spec)
    if stubbed:
        result["stubbed"] = stubbed
    return result


ACCEL_WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    **WORKERS,
    "env": env_worker,
    "matmul": matmul_worker,
    "speed": speed_worker,
}


# --------------------------------------------------------------------------- stages


def stage_environment(stage: Stage, smoke: bool) -> dict[str, Any]:
    rec = stage.record
    rec["machine"] = machine_info()
    rec["versions"] = versions()
    for package in ("chex", "orbax-checkpoint", "timm", "hypothesis", "grain", "pillow"):
        with contextlib.suppress(Exception):
            from importlib import metadata

            rec["versions"][package] = metadata.version(package)
    rec["packages"] = {p: _have(p) for p in OPTIONAL}
    for p in OPTIONAL:
        if not rec["packages"][p]:
            stage.note(f"{p} is not installed: what needs it is skipped")
    env = _env(JAX_PLATFORMS="cpu") if smoke else _env()
    info = run_worker({"kind": "env"}, env, stage.left(), entry=ENTRY)
    if "fatal" in info:
        stage.end("failed", info["fatal"].splitlines()[0])
        return {"platform": "cpu", "torch_cuda": False}
    rec.update(info)
    jax_env = rec.pop("jax_environment", "")
    rec["jax_environment_lines"] = jax_env.splitlines()
    stage.note(
        f"JAX {info['platform']}: {info['device_count']} x {info['device_kind']}"
        + (f"; torch CUDA {info['torch']['cuda']}" if info.get("torch", {}).get("cuda") else "")
    )
    stage.end("done")
    return {
        "platform": info["platform"],
        "torch_cuda": bool(info.get("torch", {}).get("cuda_available")),
        "devices": info["local_device_count"],
    }


def _parity_tests(config: dict[str, Any]) -> list[str]:
    if config["parity_tests"] is not None:
        return list(config["parity_tests"])
    return [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "parity_tests").glob("test_*.py"))
        if "jax_device" in p.read_text()
    ]


def stage_parity(
    stage: Stage,
    out: Path,
    config: dict[str, Any],
    env_info: dict[str, Any],
    smoke: bool,
    tmp: Path,
) -> None:
    if not _have("pytest"):
        stage.end("skipped", "pytest is not installed")
        return
    tests = _parity_tests(config)
    stage.record["tests"] = tests
    passes = [("pass1", "", "JAX on the accelerator vs PyTorch on the CPU")]
    if not _have("torch"):
        stage.note("torch is not installed: the torch-free half of the suite runs alone")
    if env_info["torch_cuda"]:
        passes.append(("pass2", "cuda", "PyTorch reference on CUDA"))
    elif smoke and _have("torch"):
        passes.append(
            (
                "pass2",
                "cpu",
                "plumbing check only: the PyTorch reference stays on the CPU (--cpu-smoke)",
            )
        )
    else:
        stage.note("second pass skipped: torch sees no CUDA device")
    for name, torch_device, what in passes:
        share = config["parity_pass1_share"] if name == "pass1" else 1.0
        if name == "pass2" and config["parity_pass2_tests"] is not None:
            tests = list(config["parity_pass2_tests"])
        timeout = stage.left() * share
        log, summary = out / f"parity_{name}.log", tmp / f"parity_{name}.json"
        extra = {
            "SERES_ACCEL_SUMMARY": str(summary),
            "SERES_ACCEL_ONLY_ACCELERATOR": "1",
            "SERES_ACCEL_TORCH_DEVICE": torch_device,
            "SERES_TEST_COMPILE_CACHE": str(tmp / "jax-test-cache"),
        }
        if smoke:
            extra["JAX_PLATFORMS"] = "cpu"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "seres_bench.accel_pytest",
            "-m",
            "not slow",
            "-ra",
            *tests,
        ]
        stage.note(f"{name} ({what}): {len(tests)} test selections, {timeout:.0f} s allowed")
        start = time.perf_counter()
        rc = _run_logged(cmd, _env(**extra), timeout, log)
        result: dict[str, Any] = {
            "what": what,
            "log": log.name,
            "seconds": round(time.perf_counter() - start, 1),
        }
        if summary.exists():
            result.update(json.loads(summary.read_text()))
        result["exit"] = "timed out" if rc is None else rc
        stage.record[name] = result
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.get("outcomes", {}).items()))
        stage.note(
            f"{name}: exit {result['exit']}, {counts or 'no outcomes'}, "
            f"{result['seconds']:.0f} s; log {log.name}"
        )
        for path, reason in result.get("left_out", {}).items():
            stage.note(f"{name}: left out {path} ({reason})")
        if rc is None:
            stage.end("partial", f"{name} ran out of its time")
            return
    first = stage.record["pass1"]
    if first["exit"] not in (0, 5) or first.get("failed"):
        stage.end("partial", f"pass1 failed: {', '.join(first.get('failed', [])[:5])}")
    else:
        stage.end("done")


def stage_speed(
    stage: Stage, config: dict[str, Any], env_info: dict[str, Any], smoke: bool, tmp: Path
) -> None:
    rec = stage.record
    device = "cpu" if smoke else env_info["platform"]
    if device not in ("cpu", "gpu", "tpu"):
        device = "gpu"  # jax names CUDA and ROCm backends "cuda"/"rocm"
    rec["device"] = device
    env = _env(JAX_PLATFORMS="cpu") if smoke or device == "cpu" else _env()
    stage.note(f"bf16 matmul peak, sizes {config['matmul_sizes']}")
    spec = {"kind": "matmul", "device": device, "sizes": list(config["matmul_sizes"])}
    rec["matmul"] = peak = run_worker(spec, env, max(stage.left(), 1), entry=ENTRY)
    peak_tflops = peak.get("peak_tflops")
    stage.note(f"peak {peak_tflops:.1f} TFLOP/s" if peak_tflops else f"peak: {peak}")
    impls = ["jax", "torch_eager", "torch_compile"]
    skipped = {i: "--cpu-smoke leaves it out" for i in impls if i not in config["speed_impls"]}
    if not _have("torch"):
        skipped |= {i: "torch is not installed" for i in impls[1:]}
    elif device == "tpu":
        skipped |= {i: "TPU: PyTorch is not measured" for i in impls[1:]}
    elif device == "gpu" and not env_info["torch_cuda"]:
        skipped |= {i: "torch sees no CUDA device" for i in impls[1:]}
    rec["skipped_impls"] = skipped
    for reason in dict.fromkeys(skipped.values()):
        stage.note(f"skipped: {[i for i, r in skipped.items() if r == reason]}: {reason}")
    rec["configs"] = {}
    ran_out = False
    for name, arch, size, batch in config["speed_configs"]:
        entry: dict[str, Any] = {"arch": arch, "image_size": size, "batch": batch, "impls": {}}
        rec["configs"][name] = entry
        for impl in impls:
            if impl in skipped:
                continue
            if stage.left() < 5:
                entry["impls"][impl] = {"fatal": "not run: the stage's time ran out"}
                ran_out = True
                continue
            spec = {
                "kind": "speed",
                "impl": impl,
                "arch": arch,
                "image_size": size,
                "batch": batch,
                "device": device,
                "bf16": True,
                "seed": 0,
                "shard": True,
                "channels_last": True,
                **config["speed_protocol"],
            }
            start = time.perf_counter()
            result = run_worker(
                spec,
                worker_env("model", impl, device, tmp / f"{name}-{impl}"),
                stage.left(),
                entry=ENTRY,
            )
            entry["impls"][impl] = _speed_row(result, batch, peak_tflops)
            row = entry["impls"][impl]
            took = time.perf_counter() - start
            if "fatal" in row:
                ran_out |= "timed out" in row["fatal"]
                stage.note(f"{name} {impl}: error: {row['fatal'].splitlines()[0][:150]}")
            else:
                stage.note(
                    f"{name} {impl}: train {_num(row.get('train_img_s'))} img/s, "
                    f"infer {_num(row.get('infer_img_s'))} img/s ({took:.0f} s)"
                )
    rows = [r for e in rec["configs"].values() for r in e["impls"].values()]
    if ran_out:
        stage.end("partial", "ran out of time")
    elif rows and all("fatal" in r for r in rows):
        stage.end("failed", "no measurement succeeded")
    elif any("fatal" in r or r.get("errors") for r in rows):
        stage.end("partial", "some measurements failed")
    else:
        stage.end("done")


def _speed_row(result: dict[str, Any], batch: int, peak: float | None) -> dict[str, Any]:
    if "fatal" in result:
        return {"fatal": result["fatal"]}
    row: dict[str, Any] = {
        "precision": result["precision"],
        "params": result["params"],
        "errors": result.get("errors", {}),
        "runs": result,
    }
    for phase in ("train", "infer"):
        if phase in result:
            row[f"{phase}_img_s"] = result[phase]["img_s"]
            row[f"first_{phase}_s"] = result[phase]["first_step_s"]
    row["device_peak_mib"] = result.get("device_peak_mib")
    if "stubbed" in result:
        row["stubbed"] = result["stubbed"]
    return row


def _add_flops(speed: dict[str, Any]) -> None:
    """TFLOP/s and MFU of every row, from the JAX step's FLOPs per image (XLA's cost analysis,
    per device) and the measured matmul peak (per device)."""
    peak = speed.get("matmul", {}).get("peak_tflops")
    for entry in speed.get("configs", {}).values():
        jax_row = entry["impls"].get("jax", {})
        flops = jax_row.get("runs", {}).get("flops") or {}
        devices = jax_row.get("runs", {}).get("info", {}).get("devices", 1)
        per_device_batch = entry["batch"] / devices
        for row in entry["impls"].values():
            for phase in ("train", "infer"):
                rate, step_flops = row.get(f"{phase}_img_s"), flops.get(phase)
                if not rate or not step_flops:
                    continue
                # img/s over all devices -> steps/s; each device does step_flops per step.
                tflops = step_flops * (rate / entry["batch"]) / 1e12
                row[f"{phase}_tflops"] = tflops
                row[f"{phase}_mfu"] = tflops / peak if peak else None
                row[f"{phase}_gflop_per_image"] = step_flops / per_device_batch / 1e9


def _seres_train(args: list[str], env: dict[str, str], timeout: float, log: Path) -> int | None:
    code = "import sys; from seres_cli.main import main; sys.exit(main(sys.argv[1:]))"
    return _run_logged([sys.executable, "-c", code, "train", *args], env, timeout, log)


def _epochs(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def stage_training(stage: Stage, out: Path, config: dict[str, Any], smoke: bool, tmp: Path) -> None:
    rec = stage.record
    missing = [p for p in TRAIN_PACKAGES if not _have(p)]
    if missing:
        stage.end("skipped", f"seres train needs {', '.join(missing)}, not installed here")
        return
    t = config["training"]
    rec["recipe"] = t
    common = [
        "--model",
        t["model"],
        "--dataset",
        "synthetic",
        "--image-size",
        str(t["image_size"]),
        "--batch-size",
        str(t["batch"]),
        "--epochs",
        "30",
        "--precision",
        t["precision"],
        "--lr",
        str(t["lr"]),
        "--warmup-epochs",
        "0",
        "--checkpoint-every",
        "0",
        "--no-progress",
        "--compile-cache",
        str(tmp / "train-compile-cache"),
    ]
    env = _env(JAX_PLATFORMS="cpu") if smoke else _env()
    total = t["first"] + t["more"]
    runs = {
        "first": (tmp / "resumed", ["--max-steps", str(t["first"])]),
        "resume": (tmp / "resumed", ["--max-steps", str(total), "--resume"]),
        "straight": (tmp / "straight", ["--max-steps", str(total)]),
    }
    log = out / "training.log"
    rec["log"] = log.name
    for name, (workdir, extra) in runs.items():
        if stage.left() < 3:
            stage.end("partial", f"ran out of time before the {name} run")
            return
        with log.open("a") as f:
            f.write(f"\n===== {name}: seres train {' '.join(extra)} --workdir {workdir}\n")
        start = time.perf_counter()
        rc = _seres_train([*common, "--workdir", str(workdir), *extra], env, stage.left(), log)
        seconds = round(time.perf_counter() - start, 1)
        rec[name] = {
            "exit": "timed out" if rc is None else rc,
            "seconds": seconds,
            "epochs": _epochs(workdir),
        }
        stage.note(f"{name}: exit {rec[name]['exit']}, {seconds:.0f} s")
        if rc != 0:
            why = "ran out of time" if rc is None else f"exited with {rc}"
            stage.end("partial", f"the {name} run {why}; see {log.name}")
            return
    resumed, straight = rec["resume"]["epochs"], rec["straight"]["epochs"]
    losses = [r["train_loss"] for r in resumed]
    rec["loss_went_down"] = len(losses) >= 2 and losses[-1] < losses[0]
    last = {k: (resumed[-1][k], straight[-1][k]) for k in ("train_loss", "val_loss")}
    same_steps = [r["step"] for r in resumed] == [r["step"] for r in straight]
    rec["resume_vs_straight"] = {k: _rel(a, b) for k, (a, b) in last.items()}
    rec["resumed_matches"] = same_steps and all(
        v <= RESUME_TOL for v in rec["resume_vs_straight"].values()
    )
    rec["steps"] = [r["step"] for r in resumed]
    stage.note(
        f"train loss by epoch {[round(v, 4) for v in losses]}; resumed vs uninterrupted at "
        f"step {total}: " + ", ".join(f"{k} {v:.1e}" for k, v in rec["resume_vs_straight"].items())
    )
    if rec["loss_went_down"] and rec["resumed_matches"]:
        stage.end("done")
    else:
        stage.end("partial", "the loss did not go down or the resumed run left the trajectory")


# --------------------------------------------------------------------------- report


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def render_markdown(results: dict[str, Any]) -> str:
    stages = results["stages"]
    env = stages.get("environment", {})
    lines = [
        "# seres accelerator check"
        + (" (--cpu-smoke: toy sizes, not a measurement)" if results["cpu_smoke"] else ""),
        "",
        f"- **created**: {results['created']}; total {results['seconds']:.0f} s",
        f"- **devices**: JAX {env.get('platform', '?')}, {env.get('device_count', '?')} x "
        f"{env.get('device_kind', '?')}; torch {env.get('torch', 'not installed')}",
        "- **versions**: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v),
        "",
        "| stage | status | seconds | budget s | note |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name in STAGES:
        s = stages.get(name, {"status": "not run"})
        reason = s.get("reason", "")
        lines.append(
            f"| {name} | {s['status']} | {_num(s.get('seconds'))} | "
            f"{_num(s.get('budget_s'))} | {reason} |"
        )
    parity = stages.get("parity", {})
    for name in ("pass1", "pass2"):
        p = parity.get(name)
        if not p:
            continue
        counts = ", ".join(f"{k} {v}" for k, v in sorted(p.get("outcomes", {}).items()))
        lines += [
            "",
            f"## Parity {name}: {p['what']}",
            "",
            f"exit {p['exit']}, {counts}; {p.get('deselected_cpu_cases', 0)} CPU cases "
            f"deselected; log `{p['log']}`",
        ]
        lines += [f"- left out {k}: {v}" for k, v in p.get("left_out", {}).items()]
        lines += [f"- failed: {nodeid}" for nodeid in p.get("failed", [])]
        worst = p.get("worst", {})
        if worst:
            lines += [
                "",
                "| tolerance class | worst errors (relative to the reference's max-abs) |",
                "| --- | --- |",
            ]
            for label, kinds in sorted(worst.items()):
                cells = ", ".join(f"{k} {v:.2e}" for k, v in kinds.items())
                lines.append(f"| {label} | {cells} |")
    speed = stages.get("speed", {})
    if speed.get("configs"):
        peak = speed.get("matmul", {}).get("peak_tflops")
        lines += [
            "",
            f"## Speed ({speed.get('device')}, bf16; matmul peak "
            f"{_num(peak, 1)} TFLOP/s per device)",
            "",
            "| config | impl | train img/s | infer img/s | first train s | "
            "first infer s | train TFLOP/s | train MFU | infer MFU |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, entry in speed["configs"].items():
            for impl, row in entry["impls"].items():
                if "fatal" in row:
                    lines.append(f"| {name} | {impl} | error: {row['fatal'][:80]} |||||||")
                    continue
                mfu = [row.get(f"{phase}_mfu") for phase in ("train", "infer")]
                row_cells = [
                    _num(row.get("train_img_s")),
                    _num(row.get("infer_img_s")),
                    _num(row.get("first_train_s"), 2),
                    _num(row.get("first_infer_s"), 2),
                    _num(row.get("train_tflops"), 1),
                    *(f"{m:.1%}" if m is not None else "–" for m in mfu),
                ]
                lines.append(f"| {name} | {impl} | " + " | ".join(row_cells) + " |")
        for name, entry in speed["configs"].items():
            ratio = _ratio(entry, "jax", "torch_compile")
            if ratio:
                lines.append(f"\n{name}: JAX ÷ torch.compile training {ratio:.2f}×")
    train = stages.get("training", {})
    if "resume_vs_straight" in train:
        lines += [
            "",
            "## Training smoke",
            "",
            f"{train['recipe']}; epochs end at steps {train['steps']}; "
            f"loss went down: {train['loss_went_down']}; resumed run matches the "
            f"uninterrupted one: {train['resumed_matches']} ("
            + ", ".join(f"{k} {v:.1e}" for k, v in train["resume_vs_straight"].items())
            + ")",
        ]
    notes = [f"{n}: {t}" for n in STAGES for t in stages.get(n, {}).get("notes", [])]
    lines += ["", "## Log", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _ratio(entry: dict[str, Any], a: str, b: str) -> float | None:
    x = entry["impls"].get(a, {}).get("train_img_s")
    y = entry["impls"].get(b, {}).get("train_img_s")
    return x / y if x and y else None


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="where the results go (required)")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="every stage on the CPU at toy sizes (about a minute)",
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    parser.add_argument(
        "--budget-scale",
        type=float,
        default=1.0,
        help="multiply every stage's time budget (a slow or busy machine)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


@contextlib.contextmanager
def _timed(stage: Stage) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except Exception as err:  # a bug in a stage must not cost the others
        stage.end("failed", f"{type(err).__name__}: {err}")
    finally:
        stage.record["seconds"] = round(time.perf_counter() - start, 1)
        stage.end("done")


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = SMOKE if args.cpu_smoke else FULL
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    results: dict[str, Any] = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "cpu_smoke": args.cpu_smoke,
        "loadavg_start": loadavg(),
        "stages": {},
    }
    start = time.perf_counter()
    env_info: dict[str, Any] = {"platform": "cpu", "torch_cuda": False}
    with tempfile.TemporaryDirectory(prefix="seres-accel-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name in STAGES:
            record: dict[str, Any] = {}
            results["stages"][name] = record
            stage = Stage(name, config["budgets"][name] * args.budget_scale, record)
            if name not in wanted:
                stage.end("skipped", "not in --stages")
                continue
            _log(f"== {name} ({stage.budget:.0f} s allowed)")
            with _timed(stage):
                if name == "environment":
                    env_info = stage_environment(stage, args.cpu_smoke)
                    if not args.cpu_smoke and env_info["platform"] == "cpu":
                        stage.note(
                            "no GPU or TPU: the full-size stages will run out of time "
                            "on the CPU; --cpu-smoke is the CPU check"
                        )
                elif name == "parity":
                    stage_parity(stage, args.out, config, env_info, args.cpu_smoke, tmp)
                elif name == "speed":
                    stage_speed(stage, config, env_info, args.cpu_smoke, tmp)
                    _add_flops(record)
                else:
                    stage_training(stage, args.out, config, args.cpu_smoke, tmp)
            _log(
                f"== {name}: {record['status']}"
                + (f" ({record['reason']})" if "reason" in record else "")
            )
            _write(args.out, results, start)  # partial results survive a later crash
    return _write(args.out, results, start)


def _write(out: Path, results: dict[str, Any], start: float) -> dict[str, Any]:
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["loadavg_end"] = loadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / "accelerator_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "accelerator_check.md").write_text(render_markdown(results))
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker, ACCEL_WORKERS)
    if args.out is None:
        build_parser().error("--out DIR is required")
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.log"):
        old.unlink()  # the logs are appended to
    results = run(args)
    print(render_markdown(results), end="")
    _log(f"wrote {args.out / 'accelerator_check.json'} and {args.out / 'accelerator_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
