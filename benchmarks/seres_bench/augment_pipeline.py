"""The augmented training input pipeline (opt-in: ``bench.py --only augment`` or
``--augment-pipeline``): seres' loader with timm's RandAugment and random erasing at 224 against
a ``torch.utils.data.DataLoader`` running timm's own ``create_transform``, per worker count, on
an image folder of real photographs (``photo_folder``). Both ends live here: the seres child
(``augment_worker``, kind ``augment``), the launch of the timm child, and the parent's rounds,
``results["augment_pipeline"]`` and its Markdown section.

* **seres, host** (``augment_worker``): what ``seres train --aa rand-m9-mstd0.5-inc1 --reprob
  0.25 --remode pixel`` runs on an image folder — ``TrainConfig(...).data_options()`` (timm's
  ``transforms_imagenet_train`` up to ``ToTensor``: decode, ``RandomResizedCrop``, flip,
  RandAugment), ``train_dataset``, ``to_devices(workers=N)`` without ``mean``/``std``: uint8
  batches, each waited for (``jax.block_until_ready``).
* **seres, device**: seres normalises and erases on the device, not in the workers: the
  normalisation ``to_devices`` jits, and ``random_erasing(key, images, config.erasing())``
  compiled as the training step is (``seres_jax.compiler.jit``), timed apart per batch on the
  last loaded batch once the loader has stopped.
* **seres, host + device**: the host's images/s with the device's time per image added as
  serial time, ``1 / (1 / host img/s + device s/img)``, no overlap assumed. On an accelerator
  that work overlaps the host's and takes no host core, so this is seres' worst case; on a CPU
  the "device" is the cores the workers run on, and the sum is what it costs there.
* **timm** (``timm_augment_runner.py``, run by an interpreter that has timm: ``--timm-python``
  or ``$SERES_TIMM_PYTHON``; without one this side is skipped and the report says so): timm's
  ``ImageDataset`` with ``create_transform(224, is_training=True, auto_augment=...,
  re_prob=0.25, re_mode="pixel", ...)`` under ``DataLoader(num_workers=N)``; its workers also
  run ``ToTensor``, ``Normalize`` and ``RandomErasing`` (timm's path without its CUDA
  prefetcher).

Both sides get the same settings (``AUGMENT``; timm ``train.py``'s defaults where the issue
names none, e.g. ``interpolation="random"``) and ``input_pipeline``'s protocol: the first batch
alone (start-up), warm-up batches, ``repeats`` runs of ``batches`` batches, the median run. Here
both counts are per worker (``warmup_per_worker``, ``batches_per_worker``): a grain worker
computes 16 batches at once on ``to_devices``' 16 threads, so its batches arrive in bursts, and
a run must span a burst period to measure the rate rather than the burst's phase.

**Fairness on a shared machine.** Each side runs in ``rounds`` children per worker count, the
two sides adjacent in time, their order reversed from one round to the next; a side's images/s
is the median of its runs pooled over the rounds, and the per-round ratios show the noise.
The CPU time of a child's process tree over its timed runs (``cpu_ms_per_image``,
``cores_busy``) shows what a worker count really uses: a grain worker's threads can keep more
than one core busy, a DataLoader worker one."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .configs import AUGMENT, AUGMENT_GOAL, AUGMENT_QUICK
from .machine import loadavg
from .measure import maxrss_mib
from .photo_folder import make_photo_folder
from .report import _fmt, _ratio, measured_line, section_header
from .timm_augment_runner import RESULT_PREFIX, tree_cpu_s
from .worker import run_worker, worker_env

SIDES = ("seres", "timm")
# The ``AUGMENT`` settings both children get.
CHILD_KEYS = (
    "arch", "image_size", "batch", "auto_augment", "re_prob", "re_mode", "re_count",
    "interpolation", "color_jitter", "device_warmup", "device_steps",
)  # fmt: skip
TIMM_RUNNER = Path(__file__).resolve().with_name("timm_augment_runner.py")
TIMM_PYTHON_ENV = "SERES_TIMM_PYTHON"
NOT_MEASURED = (
    "timm's side was not measured: no interpreter with timm (--timm-python PATH or "
    f"${TIMM_PYTHON_ENV})"
)

# --------------------------------------------------------------------------- the seres child


def _train_config(spec: dict[str, Any]) -> Any:
    """The ``TrainConfig`` of ``seres train`` with the section's augmentation flags."""
    from seres_jax.train import TrainConfig

    return TrainConfig(
        model=spec["arch"], dataset="imagefolder", data_dir=spec["root"], augment=True,
        image_size=spec["image_size"], aa=spec["auto_augment"], reprob=spec["re_prob"],
        remode=spec["re_mode"], recount=spec["re_count"],
        train_interpolation=spec["interpolation"], color_jitter=spec["color_jitter"],
    )  # fmt: skip


def _timed_batches(
    next_batch: Callable[[], Any], spec: dict[str, Any]
) -> tuple[float, list[float], float | None, Any]:
    """``input_pipeline``'s protocol on ``next_batch``: the first call alone (start-up is
    measured by the caller from before the loader's creation), ``warmup`` calls, then
    ``repeats`` runs of ``batches`` calls. Returns the end of the first call, the runs'
    seconds, the process tree's CPU seconds over the runs, and the last batch."""
    last = next_batch()
    first_done = time.perf_counter()
    for _ in range(spec["warmup"]):
        last = next_batch()
    cpu_start = tree_cpu_s()
    reps = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        for _ in range(spec["batches"]):
            last = next_batch()
        reps.append(time.perf_counter() - start)
    cpu_end = tree_cpu_s()
    cpu = None if cpu_start is None or cpu_end is None else cpu_end - cpu_start
    return first_done, reps, cpu, last


def _device_seconds(call: Callable[[int], Any], spec: dict[str, Any]) -> dict[str, Any]:
    """``call(i)`` (one batch's device work, ``i`` a fresh index per call): the first call
    alone (compilation), ``device_warmup`` calls, then ``repeats`` runs of ``device_steps``
    calls, the device waited for at the end of each run. ``batch_s``: each run's seconds per
    call."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(call(0))
    first = time.perf_counter() - start
    index = 1
    for _ in range(spec["device_warmup"]):
        jax.block_until_ready(call(index))
        index += 1
    per_call = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        out = None
        for _ in range(spec["device_steps"]):
            out = call(index)
            index += 1
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - start) / spec["device_steps"])
    return {"first_call_s": first, "batch_s": per_call}


def augment_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The seres side with ``spec["workers"]`` grain processes: the host pipeline's start-up,
    runs and CPU time (uint8 batches), then the device's normalisation and random erasing of
    one batch, timed apart."""
    start = time.perf_counter()
    import grain
    import jax
    import numpy as np
    import PIL

    from seres_jax import compiler
    from seres_jax.data import load_dataset, to_devices, train_dataset
    from seres_jax.data.images import normalize
    from seres_jax.random_erasing import random_erasing
    from seres_jax.train import compile_steps, make_mesh

    config = _train_config(spec)
    options = config.data_options()
    erasing = config.erasing()
    splits = load_dataset("imagefolder", spec["root"], spec["seed"], options)
    mean, std = splits.mean, splits.std
    if (
        mean is None or std is None
        or not np.allclose(mean, spec["mean"]) or not np.allclose(std, spec["std"])
    ):  # fmt: skip
        # timm's side is given spec's mean and std: both sides must normalise alike.
        raise ValueError(f"seres normalises with mean {mean}, std {std}; the spec says "
                         f"{spec['mean']}, {spec['std']}")  # fmt: skip
    if erasing is None:
        raise ValueError(f"re_prob {spec['re_prob']} gives no random erasing")
    sharding = compile_steps(make_mesh()).batch
    batches = to_devices(
        train_dataset(splits, spec["batch"], spec["seed"]), sharding, workers=spec["workers"]
    )
    iterator = iter(batches)

    def next_batch() -> Any:
        return jax.block_until_ready(next(iterator))

    try:
        first_done, reps, cpu, (images, _) = _timed_batches(next_batch, spec)
    finally:
        iterator.close()
    startup = first_done - start

    scale = jax.jit(lambda x: normalize(x, mean, std), out_shardings=sharding)
    erase = compiler.jit(lambda key, x: random_erasing(key, x, erasing))
    key = jax.random.key(spec["seed"])
    device = {"normalize": _device_seconds(lambda i: scale(images), spec)}
    normalised = scale(images)
    device["erase"] = _device_seconds(lambda i: erase(jax.random.fold_in(key, i), normalised), spec)
    return {
        "startup_s": startup,
        "rep_s": reps,
        "img_s": spec["batch"] * spec["batches"] / statistics.median(reps),
        "batches": spec["batches"],
        "cpu_s": cpu,
        "images_timed": spec["batch"] * spec["batches"] * spec["repeats"],
        "batch_shape": list(images.shape),
        "batch_dtype": str(images.dtype),
        "device": device,
        "device_kind": jax.devices()[0].device_kind,
        "transform": {
            "auto_augment": options.auto_augment,
            "interpolation": options.train_interpolation or options.data_config.interpolation,
            "scale": list(options.scale),
            "ratio": list(options.ratio),
            "hflip": options.hflip,
            "color_jitter": options.color_jitter,
            "erasing": repr(erasing),
        },
        "peak_rss_mib": maxrss_mib(),
        "versions": {
            "jax": jax.__version__,
            "grain": getattr(grain, "__version__", None),
            "pillow": PIL.__version__,
            "numpy": np.__version__,
        },
    }


# --------------------------------------------------------------------------- the timm child


def timm_python(option: str | None) -> str | None:
    """The interpreter with timm: ``option`` (``--timm-python``), else ``$SERES_TIMM_PYTHON``,
    else ``None`` (the timm side is skipped)."""
    return option or os.environ.get(TIMM_PYTHON_ENV) or None


def run_timm(
    python: str, spec: dict[str, Any], timeout: float, runner: Path = TIMM_RUNNER
) -> dict[str, Any]:
    """``spec`` measured by ``runner`` under ``python``; its answer, or ``{"fatal": why}``."""
    env = dict(os.environ)
    # The timm interpreter's own packages only: nothing of this environment's path.
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    cmd = [python, str(runner), json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"fatal": f"timm runner timed out after {timeout:.0f} s"}
    except OSError as err:
        return {"fatal": f"cannot run {python}: {err}"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            answer: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return answer
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    return {"fatal": f"timm runner exited with status {proc.returncode}: {tail}"[:2000]}


# --------------------------------------------------------------------------- results


def loader_batches(settings: dict[str, Any], workers: int) -> tuple[int, int]:
    """A child's warm-up batches and batches per run at ``workers`` workers."""
    return settings["warmup_per_worker"] * workers, settings["batches_per_worker"] * workers


def round_sides(round_index: int) -> tuple[str, ...]:
    """The two sides' order in a round: seres first in even rounds, timm first in odd ones."""
    return SIDES if round_index % 2 == 0 else SIDES[::-1]


def empty_section(settings: dict[str, Any], rounds: int) -> dict[str, Any]:
    """``settings``: the ``AUGMENT`` keys the run used, plus repeats, rounds, seed, device,
    quick and the timm interpreter."""
    keys = [str(w) for w in settings["workers"]]

    def per_worker(value: Any) -> dict[str, Any]:
        return {key: value() if callable(value) else value for key in keys}

    return {
        "settings": settings,
        "img_s": {"seres_host": per_worker(None), "seres": per_worker(None),
                  "timm": per_worker(None)},
        "img_s_per_worker": {"seres_host": per_worker(None), "seres": per_worker(None),
                             "timm": per_worker(None)},
        "rounds_img_s": {"seres_host": per_worker(lambda: [None] * rounds),
                         "seres": per_worker(lambda: [None] * rounds),
                         "timm": per_worker(lambda: [None] * rounds)},
        "seres_vs_timm": per_worker(None),
        "host_vs_timm": per_worker(None),
        "seres_vs_timm_rounds": per_worker(lambda: [None] * rounds),
        "startup_s": {side: per_worker(lambda: [None] * rounds) for side in SIDES},
        "cpu_ms_per_image": {side: per_worker(None) for side in SIDES},
        "cores_busy": {side: per_worker(None) for side in SIDES},
        "device": {"normalize_ms_per_image": None, "erase_ms_per_image": None,
                   "ms_per_image": None, "first_call_s": {"normalize": None, "erase": None}},
        "goal": AUGMENT_GOAL,
        "goal_met": None,
        "errors": {},
        "skipped": {},
        "runs": {side: per_worker(lambda: [None] * rounds) for side in SIDES},
    }  # fmt: skip


def fill_side(
    section: dict[str, Any], side: str, workers: int, round_index: int, result: dict[str, Any]
) -> None:
    """One child's answer (``side``: ``"seres"`` or ``"timm"``)."""
    key = str(workers)
    section["runs"][side][key][round_index] = result
    if "fatal" in result:
        section["errors"][f"{side}, {workers} workers, round {round_index + 1}"] = result["fatal"]
        return
    section["startup_s"][side][key][round_index] = result["startup_s"]
    batch, batches = section["settings"]["batch"], loader_batches(section["settings"], workers)[1]
    name = "seres_host" if side == "seres" else "timm"
    section["rounds_img_s"][name][key][round_index] = (
        batch * batches / statistics.median(result["rep_s"])
    )


def _answers(section: dict[str, Any], side: str, key: str | None = None) -> list[dict[str, Any]]:
    runs = section["runs"][side]
    keys = [key] if key is not None else list(runs)
    return [a for k in keys for a in runs[k] if a is not None and "fatal" not in a]


def _combined(host_img_s: float | None, device_s_per_image: float | None) -> float | None:
    """The host's images/s with the device's time per image added as serial time."""
    if host_img_s is None or device_s_per_image is None:
        return None
    return 1.0 / (1.0 / host_img_s + device_s_per_image)


def finish_section(section: dict[str, Any]) -> None:
    """Pooled images/s per side and worker count, the device's cost per image (pooled over
    every seres child), the combined seres figure, the ratios (pooled and per round), CPU
    time per image, and the goal."""
    settings = section["settings"]
    batch = settings["batch"]
    device = section["device"]
    seres_all = _answers(section, "seres")
    per_image: dict[str, float | None] = {}
    for part in ("normalize", "erase"):
        pooled = [t for a in seres_all for t in a["device"][part]["batch_s"]]
        seconds = statistics.median(pooled) / batch if pooled else None
        per_image[part] = seconds
        device[f"{part}_ms_per_image"] = None if seconds is None else seconds * 1e3
        firsts = [a["device"][part]["first_call_s"] for a in seres_all]
        device["first_call_s"][part] = statistics.median(firsts) if firsts else None
    device_s = None
    if per_image["normalize"] is not None and per_image["erase"] is not None:
        device_s = per_image["normalize"] + per_image["erase"]
        device["ms_per_image"] = device_s * 1e3
    for workers in settings["workers"]:
        key = str(workers)
        batches = loader_batches(settings, workers)[1]
        for side, name in (("seres", "seres_host"), ("timm", "timm")):
            answers = _answers(section, side, key)
            pooled = [t for a in answers for t in a["rep_s"]]
            section["img_s"][name][key] = (
                batch * batches / statistics.median(pooled) if pooled else None
            )
            cpu = [a for a in answers if a.get("cpu_s") is not None]
            if cpu:
                cpu_s = sum(a["cpu_s"] for a in cpu)
                images = sum(a["images_timed"] for a in cpu)
                section["cpu_ms_per_image"][side][key] = cpu_s / images * 1e3
                section["cores_busy"][side][key] = cpu_s / sum(sum(a["rep_s"]) for a in cpu)
        img_s = section["img_s"]
        img_s["seres"][key] = _combined(img_s["seres_host"][key], device_s)
        section["rounds_img_s"]["seres"][key] = [
            _combined(host, device_s) for host in section["rounds_img_s"]["seres_host"][key]
        ]
        for name in ("seres_host", "seres", "timm"):
            value = img_s[name][key]
            section["img_s_per_worker"][name][key] = None if value is None else value / workers
        section["seres_vs_timm"][key] = _ratio(img_s["seres"][key], img_s["timm"][key])
        section["host_vs_timm"][key] = _ratio(img_s["seres_host"][key], img_s["timm"][key])
        section["seres_vs_timm_rounds"][key] = [
            _ratio(s, t)
            for s, t in zip(
                section["rounds_img_s"]["seres"][key],
                section["rounds_img_s"]["timm"][key],
                strict=True,
            )
        ]  # fmt: skip
    ratios = list(section["seres_vs_timm"].values())
    if ratios and all(r is not None for r in ratios):
        section["goal_met"] = all(r >= section["goal"] for r in ratios)


# --------------------------------------------------------------------------- Markdown


def _median_cell(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    return _fmt(statistics.median(present), "s") if present else "–"


def _pair(section: dict[str, Any], key: str, workers: str, kind: str) -> str:
    """``seres · timm`` of ``section[key]`` at ``workers``."""
    values = section[key]
    return f"{_fmt(values['seres'][workers], kind)} · {_fmt(values['timm'][workers], kind)}"


def augment_markdown(results: dict[str, Any]) -> str:
    """The report's augmented-pipeline section (empty if it did not run)."""
    section = results.get("augment_pipeline")
    if not section:
        return ""
    s, device = section["settings"], section["device"]
    size = f"{s['image_size']}×{s['image_size']}"
    timm_skipped = "timm" in section["skipped"]
    lines = [
        "",
        f"## Augmented input pipeline (RandAugment + random erasing, {size}, batch "
        f"{s['batch']}, {s['train_images']} JPEGs of ~500×375)",
        "",
        measured_line(section),
        "",
        f"**seres**: the loader of `seres train --aa {s['auto_augment']} --reprob "
        f"{s['re_prob']} --remode {s['re_mode']} --train-interpolation {s['interpolation']}`: "
        "`train_dataset` + `to_devices(workers=N)`, grain processes doing decode, "
        "`RandomResizedCrop`, flip and RandAugment (uint8 out: *host*); the normalisation and "
        "`random_erasing` run on the device, here timed apart per batch "
        f"({_fmt(device['normalize_ms_per_image'], 's')} + "
        f"{_fmt(device['erase_ms_per_image'], 's')} ms per image on "
        f"{section.get('device_kind') or s['device']}) and added as serial time: *host + "
        "device* = 1 ÷ (1 ÷ host img/s + device s/img), no overlap assumed (on an accelerator "
        "that work overlaps the host's). **timm**: `DataLoader(num_workers=N)` over timm's "
        f"`ImageDataset` with `create_transform({s['image_size']}, is_training=True, "
        f"auto_augment='{s['auto_augment']}', re_prob={s['re_prob']}, re_mode='{s['re_mode']}', "
        f"interpolation='{s['interpolation']}', color_jitter={s['color_jitter']}, mean/std "
        "ImageNet)`, whose workers also run `ToTensor`, `Normalize` and `RandomErasing`. "
        f"{s['rounds']} round(s) per worker count, the sides adjacent and their order reversed "
        f"each round; per child the first batch alone (start-up), "
        f"{s['warmup_per_worker']} × N warm-up batches, {s['repeats']} runs of "
        f"{s['batches_per_worker']} × N batches; img/s from the median run pooled over the "
        "rounds, per worker = img/s ÷ N. CPU ms/img and cores busy: the CPU time of the child's "
        "process tree over its timed runs, per image and per second (a grain worker runs the "
        "transforms on 16 threads, a DataLoader worker on one).",
        "",
        "| workers | seres host img/s | seres host + device img/s | timm img/s "
        "| per worker seres · timm | seres ÷ timm | per round | host only ÷ timm "
        "| CPU ms/img seres · timm | cores busy seres · timm | start-up s seres · timm |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    img_s, per_worker = section["img_s"], section["img_s_per_worker"]
    for workers in s["workers"]:
        key = str(workers)
        rounds = ", ".join(_fmt(r, "ratio") for r in section["seres_vs_timm_rounds"][key])
        cells = [
            _fmt(img_s["seres_host"][key], "img_s"),
            _fmt(img_s["seres"][key], "img_s"),
            "skipped" if timm_skipped else _fmt(img_s["timm"][key], "img_s"),
            f"{_fmt(per_worker['seres'][key], 'img_s')} · {_fmt(per_worker['timm'][key], 'img_s')}",
            _fmt(section["seres_vs_timm"][key], "ratio"),
            "–" if timm_skipped else rounds,
            _fmt(section["host_vs_timm"][key], "ratio"),
            _pair(section, "cpu_ms_per_image", key, "s"),
            _pair(section, "cores_busy", key, "s"),
            f"{_median_cell(section['startup_s']['seres'][key])} · "
            f"{_median_cell(section['startup_s']['timm'][key])}",
        ]
        lines.append(f"| {workers} | " + " | ".join(cells) + " |")
    notes = []
    if section["goal_met"] is not None:
        worst = min(section["seres_vs_timm"].values())
        verdict = "met" if section["goal_met"] else "not met"
        notes.append(
            f"goal: seres (host + device) ÷ timm ≥ {section['goal']:.2f}× at every worker "
            f"count: {verdict} (lowest {worst:.2f}×)"
        )
    firsts = device["first_call_s"]
    notes.append(
        f"device side, first calls (compilation): normalise {_fmt(firsts['normalize'], 's')} s, "
        f"random erasing {_fmt(firsts['erase'], 's')} s"
    )
    if section.get("timm_posterize_shim"):
        notes.append(
            "timm 1.0.31's posterize fails on this Pillow (>= 13) for 0 bits; the timm runner "
            "gave it Pillow <= 12's result, a black image, as seres' RandAugment does "
            "(`timm_augment_runner.py`)"
        )
    for side, reason in section["skipped"].items():
        notes.append(f"{side}: skipped ({reason})")
    for key, error in section["errors"].items():
        first_line = error.splitlines()[0] if error else ""
        notes.append(f"{key}: error: {first_line[:160]}")
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the run


def run_augment_pipeline(
    results: dict[str, Any],
    *,
    quick: bool,
    repeats: int,
    rounds: int,
    device: str,
    seed: int,
    timeout: float,
    python: str | None,
    tmp: Path,
    log: Callable[[str], None],
) -> None:
    """The image folder, then per round and worker count a seres and a timm child (in the
    round's order) into ``results["augment_pipeline"]``."""
    data = AUGMENT_QUICK if quick else AUGMENT
    settings = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()},
        "repeats": repeats, "rounds": rounds, "seed": seed, "device": device, "quick": quick,
        "timm_python": python,
    }  # fmt: skip
    section = empty_section(settings, rounds)
    header = section_header()
    section.update({
        **header,
        "versions": {"parent": header["versions"], "seres": None, "timm": None},
        "device_kind": None,
        "transforms": {"seres": None, "timm": None},
        "timm_posterize_shim": None,
    })  # fmt: skip
    results["augment_pipeline"] = section
    if python is None:
        section["skipped"]["timm"] = NOT_MEASURED
        log(f"[augment] {NOT_MEASURED}")
    root = make_photo_folder(tmp / "augment-photos", data["train_images"], data["val_images"],
                             seed=seed)  # fmt: skip
    spec = {
        "root": str(root), "seed": seed, "repeats": repeats,
        **{k: data[k] for k in CHILD_KEYS},
        "mean": list(data["mean"]), "std": list(data["std"]),
    }  # fmt: skip
    for round_index in range(rounds):
        for workers in data["workers"]:
            for side in round_sides(round_index):
                if side == "timm" and python is None:
                    continue
                load = loadavg()
                log(f"[augment] {side}, {workers} workers, round {round_index + 1}/{rounds} "
                    f"(load {load}) ...")  # fmt: skip
                warmup, batches = loader_batches(data, workers)
                child = {**spec, "workers": workers, "warmup": warmup, "batches": batches}
                if side == "seres":
                    env = worker_env("augment", "jax", device, tmp / f"augment-{workers}")
                    result = run_worker({**child, "kind": "augment", "impl": "jax"}, env, timeout)
                else:
                    assert python is not None
                    result = run_timm(python, child, timeout)
                if "fatal" not in result:
                    result["loadavg"] = load
                    section["versions"][side] = result["versions"]
                    section["transforms"][side] = result["transform"]
                    if side == "seres":
                        section["device_kind"] = result["device_kind"]
                    else:
                        section["timm_posterize_shim"] = result["posterize_shim"]
                fill_side(section, side, workers, round_index, result)
                got = section["rounds_img_s"]["seres_host" if side == "seres" else "timm"]
                value = got[str(workers)][round_index]
                log(f"[augment] {side}: " + (f"{value:.1f} img/s" if value else "error"))
    finish_section(section)
    section["machine"]["loadavg_end"] = loadavg()
