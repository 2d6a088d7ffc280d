"""The child processes: every measurement runs in a fresh one (``bench.py --worker SPEC``), which
answers with one ``RESULT_PREFIX`` JSON line on stdout. Both ends live here: the child's
dispatch on ``spec["kind"]`` and the parent's launch, environment and parsing of the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .compile_cache import cache_worker
from .configs import JAX_IMPLS
from .converter import convert_worker
from .eval_speed import eval_worker
from .input_pipeline import pipeline_worker
from .jax_runner import jax_runners
from .measure import Runners, error_text, maxrss_mib, measure, measure_budgeted
from .nnx_runner import nnx_runners
from .torch_runner import torch_runners

RESULT_PREFIX = "BENCH_RESULT "
# The command line's entry point, which a child runs with --worker.
ENTRY = Path(__file__).resolve().parents[1] / "bench.py"


def model_runners(spec: dict[str, Any]) -> Runners:
    """The runners of ``spec["impl"]``: linen (``jax``), NNX (``jax_nnx``) or PyTorch."""
    impl = spec["impl"]
    if impl == "jax":
        return jax_runners(spec)
    if impl == "jax_nnx":
        return nnx_runners(spec)
    return torch_runners(spec, impl == "torch_compile")


def model_worker(spec: dict[str, Any]) -> dict[str, Any]:
    impl = spec["impl"]
    # Imports are done here so the peak RSS of the imports alone is on record.
    if impl in JAX_IMPLS:
        import jax  # noqa: F401
    else:
        import torch  # noqa: F401
    import_rss = maxrss_mib()
    runners = model_runners(spec)
    result: dict[str, Any] = {
        "impl": impl,
        "params": runners.params,
        "precision": runners.precision,
        "info": runners.info,
        "errors": {},
    }
    for phase, run in (("train", runners.train), ("infer", runners.infer)):
        try:
            result[phase] = measure(run, spec["batch"], spec)
        except Exception as err:
            # e.g. torch.compile without a working C++ compiler: record and carry on.
            result["errors"][phase] = error_text(err)
            traceback.print_exc()
    if runners.flops is not None and not result["errors"]:
        try:
            result["flops"] = runners.flops()
        except Exception as err:
            result["errors"]["flops"] = error_text(err)
    result["peak_rss_mib"] = maxrss_mib()
    # Inductor's helper processes (compile workers, the C++ compiler) are not counted: a
    # child's ru_maxrss starts from the RSS it was forked with, so RUSAGE_CHILDREN would
    # report the parent's memory again.
    result["import_rss_mib"] = import_rss
    result["device_peak_mib"] = runners.device_peak_mib()
    return result


def recipe_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The recipe-overhead section's child: the JAX training step alone (the recipe pieces the
    spec turns on: ``ema``, ``grad_accum_steps``, the arch string's ``drop_path_rate``), with
    the same protocol as ``model_worker``'s training phase, the repetitions cut to
    ``spec["budget_s"]`` seconds if given (``measure_budgeted``)."""
    import jax  # noqa: F401

    runners = jax_runners(spec)
    budget = spec.get("budget_s")
    if budget:
        train = measure_budgeted(runners.train, spec["batch"], spec, budget)
    else:
        train = measure(runners.train, spec["batch"], spec)
    return {
        "params": runners.params,
        "precision": runners.precision,
        "info": runners.info,
        "train": train,
        "peak_rss_mib": maxrss_mib(),
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "model": model_worker,
    "recipe": recipe_worker,
    "convert": convert_worker,
    "compile_cache": cache_worker,
    "pipeline": pipeline_worker,
    "eval": eval_worker,
}


def worker_main(
    spec_json: str, workers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None
) -> int:
    """Child-process entry: measure what ``spec`` says (with ``workers``, default ``WORKERS``),
    print one ``RESULT_PREFIX`` JSON line."""
    spec = json.loads(spec_json)
    try:
        result = (workers or WORKERS)[spec["kind"]](spec)
    except Exception as err:
        traceback.print_exc()
        result = {"fatal": error_text(err)}
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def worker_env(kind: str, impl: str | None, device: str, cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Cold compilation caches, so first-call times include the whole compilation.
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")
    env["TRITON_CACHE_DIR"] = str(cache_dir / "triton")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    # JAX computes only in the jax worker on the chosen device; elsewhere (torch imports
    # seres_jax.registry, the converter uses numpy) it must not claim an accelerator.
    if kind == "convert" or impl not in JAX_IMPLS or device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    return env


def run_worker(
    spec: dict[str, Any], env: dict[str, str], timeout: float, entry: Path = ENTRY
) -> dict[str, Any]:
    """``spec`` measured in a child process (``entry --worker SPEC``); its answer, or
    ``{"fatal": why}``."""
    cmd = [sys.executable, str(entry), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"fatal": f"worker timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    return {"fatal": f"worker exited with status {proc.returncode}: {tail}"[:2000]}
