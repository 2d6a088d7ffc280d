"""The timm side of the benchmark's augmented input-pipeline section (``augment_pipeline``): a
``torch.utils.data.DataLoader`` over timm's ``ImageDataset`` with timm's own
``create_transform(..., is_training=True, auto_augment=..., re_prob=...)``, what timm's
``train.py`` builds without its CUDA prefetcher (the workers then run ``ToTensor``,
``Normalize`` and ``RandomErasing`` too).

A self-contained script for an interpreter that has timm (timm is no dependency of seres): it
imports nothing from seres, takes one JSON spec as its argument and prints one
``BENCH_RESULT {...}`` line (``{"fatal": why}`` on failure). The parent runs it as
``<timm python> benchmarks/seres_bench/timm_augment_runner.py SPEC`` (``bench.py --only
augment --timm-python PATH``); by hand::

    /work/venv-timm/bin/python benchmarks/seres_bench/timm_augment_runner.py \\
        '{"root": "/tmp/photos", "batch": 32, "workers": 1, "warmup": 2, "batches": 8,
          "repeats": 5, "seed": 0, "image_size": 224, "auto_augment": "rand-m9-mstd0.5-inc1",
          "re_prob": 0.25, "re_mode": "pixel", "re_count": 1, "interpolation": "random",
          "color_jitter": 0.4, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'

The protocol is ``input_pipeline``'s: the first batch timed alone (the loader's creation and
the workers' launch included), ``warmup`` batches, then ``repeats`` runs of ``batches``
batches; ``img_s`` from the median run. A ``RandomSampler`` drawing as many images as the run
needs keeps the stream free of epoch ends (on ImageNet an epoch is 5,000 batches long, here the
folder is a few): at an epoch's end the DataLoader drains and refills its workers' queue.
``cpu_s`` is the CPU time of this process and its workers over the timed runs (Linux, from
``/proc``; ``None`` elsewhere).

**Posterize on Pillow >= 13.** timm 1.0.31's posterize passes ``bits_to_keep`` 0 on to
``ImageOps.posterize`` (``PosterizeIncreasing`` at magnitude 10, which ``mstd0.5`` draws
for ~2 % of its picks), which Pillow >= 13 refuses with ``ValueError``: a DataLoader worker
then fails the whole run, after ~1,000 images here. On such a Pillow the runner puts into
timm's ``NAME_TO_OP`` a posterize that returns what Pillow <= 12 computed for fewer than one
bit, a black image (the same lookup table through ``Image.point``; seres' RandAugment does the
same), and says so (``posterize_shim``); every other op is timm's own."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "


def tree_cpu_s() -> float | None:
    """CPU seconds (user + system) of this process and its living descendants, from
    ``/proc`` (``None`` where there is none): the DataLoader's workers are child processes,
    which ``resource`` counts only once they have ended."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # The command name may hold spaces and parentheses: the fields follow its last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(ticks.get(pid, 0) for pid in tree) / tick


def _posterize_pillow12(img: Any, bits_to_keep: int, **__: Any) -> Any:
    """timm's ``posterize`` with Pillow <= 12's result for fewer than one bit: black."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


def _shim_posterize() -> bool:
    """On a Pillow that refuses ``posterize(img, 0)``, timm's posterize ops get
    ``_posterize_pillow12``; whether they did."""
    import timm.data.auto_augment as aa
    from PIL import Image, ImageOps

    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
    except ValueError:
        for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
            aa.NAME_TO_OP[name] = _posterize_pillow12
        return True
    return False


def _versions() -> dict[str, str]:
    import numpy
    import PIL
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "timm": timm.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader of ``spec`` measured: start-up, repetitions, images/s, CPU time."""
    start = time.perf_counter()
    # timm first: without it this fails at once, before torch's import.
    import timm.data
    import torch

    # Before create_transform: its ops look their function up when they are built.
    shim = _shim_posterize()
    transform = timm.data.create_transform(
        spec["image_size"],
        is_training=True,
        auto_augment=spec["auto_augment"],
        interpolation=spec["interpolation"],
        color_jitter=spec["color_jitter"],
        mean=tuple(spec["mean"]),
        std=tuple(spec["std"]),
        re_prob=spec["re_prob"],
        re_mode=spec["re_mode"],
        re_count=spec["re_count"],
    )
    # As timm's train.py: create_dataset (a folder: ImageDataset of root/train), the
    # transform set on it.
    dataset = timm.data.create_dataset("", root=spec["root"], split="train", is_training=True)
    dataset.transform = transform
    batch = spec["batch"]
    needed = batch * (1 + spec["warmup"] + spec["repeats"] * spec["batches"] + 1)
    generator = torch.Generator().manual_seed(spec["seed"])
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=needed, generator=generator)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=spec["workers"],
        drop_last=True,
    )
    batches = iter(loader)
    images, _ = next(batches)
    startup = time.perf_counter() - start
    for _ in range(spec["warmup"]):
        next(batches)
    cpu_start = tree_cpu_s()
    reps = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        for _ in range(spec["batches"]):
            next(batches)
        reps.append(time.perf_counter() - start)
    cpu_end = tree_cpu_s()
    del batches  # ends the workers
    return {
        "startup_s": startup,
        "rep_s": reps,
        "img_s": batch * spec["batches"] / statistics.median(reps),
        "batches": spec["batches"],
        "cpu_s": None if cpu_start is None or cpu_end is None else cpu_end - cpu_start,
        "images_timed": batch * spec["batches"] * spec["repeats"],
        "batch_shape": list(images.shape),
        "batch_dtype": str(images.dtype),
        "transform": repr(transform),
        "posterize_shim": shim,
        # ru_maxrss: KiB on Linux, bytes on macOS.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / (2**20 if sys.platform == "darwin" else 1024),
        "versions": _versions(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: {Path(__file__).name} SPEC_JSON", file=sys.stderr)
        return 2
    try:
        result = run(json.loads(argv[0]))
    except Exception as err:
        traceback.print_exc()
        result = {"fatal": f"{type(err).__name__}: {err}".strip()[:2000]}
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
