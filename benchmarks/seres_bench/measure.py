"""Measurement: the fixed synthetic batch, what a runner offers (``Runners``), the timing
protocol (first call alone, warm-up, median of repetitions) and peak memory."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIB = 2**20


@dataclass
class Runners:
    """What a worker needs from one implementation: ``train(n)`` / ``infer(n)`` run ``n``
    steps and wait for the device once at the end."""

    train: Callable[[int], None]
    infer: Callable[[int], None]
    device_peak_mib: Callable[[], float | None]
    params: int
    precision: str
    info: dict[str, Any] = field(default_factory=dict)
    # FLOPs of one compiled training and inference step (XLA's cost analysis, per device),
    # for the implementations that can tell: ``{"train": flops, "infer": flops}``.
    flops: Callable[[], dict[str, float | None]] | None = None


def maxrss_mib() -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / MIB if sys.platform == "darwin" else value / 1024


def error_text(err: BaseException) -> str:
    # Inductor errors run to pages; the head says what failed.
    return f"{type(err).__name__}: {err}".strip()[:2000]


def synthetic_batch(spec: dict[str, Any], in_ch: int, num_classes: int) -> tuple[Any, Any]:
    """Fixed NHWC float32 images (standard normal) and int32 labels, identical for every
    implementation (same seed); torch gets the NCHW transpose of the same images."""
    import numpy as np

    rng = np.random.default_rng(spec["seed"])
    size = spec["image_size"]
    images = rng.standard_normal((spec["batch"], size, size, in_ch), dtype=np.float32)
    labels = rng.integers(0, num_classes, spec["batch"]).astype(np.int32)
    return images, labels


def first_call_s(run: Callable[[int], None]) -> float:
    """Wall time of one step, alone: on a fresh runner, everything the first call triggers."""
    start = time.perf_counter()
    run(1)
    return time.perf_counter() - start


def measure(run: Callable[[int], None], batch: int, spec: dict[str, Any]) -> dict[str, Any]:
    """First call alone, warm-up, then ``repeats`` x ``steps`` steps; median throughput."""
    first = first_call_s(run)
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


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
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


def measure_budgeted(
    run: Callable[[int], None], batch: int, spec: dict[str, Any], budget_s: float
) -> dict[str, Any]:
    """``measure``, but the repetitions stop once they have taken ``budget_s`` seconds in all
    (at least one is run): for steps that take a minute on a CPU, where the median of five
    would take ten. ``step_s`` holds each repetition's time per step, ``cut`` says whether
    fewer than ``repeats`` ran. The budget is checked after each repetition, not estimated
    from the warm-up step, which may include a second compilation."""
    first = first_call_s(run)
    if spec["warmup"]:
        run(spec["warmup"])
    steps, reps = spec["steps"], []
    while len(reps) < spec["repeats"] and sum(reps) < budget_s:
        start = time.perf_counter()
        run(steps)
        reps.append(time.perf_counter() - start)
    return {
        "first_step_s": first,
        "steps": steps,
        "repeats": len(reps),
        "cut": len(reps) < spec["repeats"],
        "rep_s": reps,
        "step_s": [t / steps for t in reps],
        "img_s": batch * steps / statistics.median(reps),
    }
