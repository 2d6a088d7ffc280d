"""The data benchmarks, parent side: the image folder, one child process per measurement
(``input_pipeline`` per loader and worker count, a ``model`` child for the JAX training step
the loader feeds, ``eval_speed`` per framework), and from their answers ``results
["input_pipeline"]`` and ``results["eval"]`` with the seres ÷ PyTorch ratios and their Markdown
sections of the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .configs import DATA, DATA_QUICK
from .photo_folder import make_photo_folder
from .report import _fmt, _ratio
from .worker import run_worker, worker_env

DATA_IMPLS = ("jax", "torch")  # seres' loader / seres_jax, and the torch DataLoader / seres_torch


def _error_lines(section: str, errors: dict[str, str]) -> list[str]:
    return [f"- {section} / {key}: error: {text.splitlines()[0][:160]}"
            for key, text in errors.items() if text]  # fmt: skip


# --------------------------------------------------------------------------- input pipeline


def empty_pipeline_entry(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings``: transform, image_size, batch, train_images, workers, warmup, batches,
    repeats, step_arch, step_batch."""
    return {
        **settings,
        "img_s": {impl: {} for impl in DATA_IMPLS},
        "startup_s": {impl: {} for impl in DATA_IMPLS},
        "jax_vs_torch": {},
        "train_step": None,
        "errors": {},
        "runs": {impl: {} for impl in DATA_IMPLS},
    }


def fill_pipeline(entry: dict[str, Any], impl: str, workers: int, result: dict[str, Any]) -> None:
    """One loader child's answer; the ratio once both loaders have the worker count."""
    key = str(workers)  # JSON object keys
    entry["runs"][impl][key] = result
    if "fatal" in result:
        entry["errors"][f"{impl}, {workers} workers"] = result["fatal"]
        return
    entry["img_s"][impl][key] = result["img_s"]
    entry["startup_s"][impl][key] = result["startup_s"]
    ratio = _ratio(entry["img_s"]["jax"].get(key), entry["img_s"]["torch"].get(key))
    if ratio is not None:
        entry["jax_vs_torch"][key] = ratio


def fill_train_step(entry: dict[str, Any], result: dict[str, Any]) -> None:
    """The ``model`` child's answer for the JAX training step the loader feeds."""
    entry["runs"]["train_step"] = result
    if "fatal" in result or "train" not in result:
        entry["errors"]["train step"] = result.get("fatal") or result["errors"].get("train", "?")
        return
    train = result["train"]
    entry["train_step"] = {
        "img_s": train["img_s"],
        "first_step_s": train["first_step_s"],
        "params": result["params"],
    }


def pipeline_markdown(entry: dict[str, Any]) -> list[str]:
    size = f"{entry['image_size']}×{entry['image_size']}"
    lines = [
        "",
        f"## Input pipeline ({entry['transform']}, {size}, batch {entry['batch']}, "
        f"{entry['train_images']} JPEGs of ~500×375)",
        "",
        "seres: `train_dataset` + `to_devices(workers=N)` (grain processes, normalised on the "
        "device); torch: `DataLoader(num_workers=N)` over a `Dataset` calling the same PIL "
        f"functions. Median of {entry['repeats']} × {entry['batches']} batches after "
        f"{entry['warmup']} warm-up batch(es); start-up is the first batch, the workers' launch "
        "included.",
        "",
        "| workers | seres img/s | torch DataLoader img/s | seres ÷ torch "
        "| seres start-up s | torch start-up s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    img_s, startup = entry["img_s"], entry["startup_s"]
    for workers in entry["workers"]:
        key = str(workers)
        cells = [
            _fmt(img_s["jax"].get(key), "img_s"),
            _fmt(img_s["torch"].get(key), "img_s"),
            _fmt(entry["jax_vs_torch"].get(key), "ratio"),
            _fmt(startup["jax"].get(key), "s"),
            _fmt(startup["torch"].get(key), "s"),
        ]
        lines.append(f"| {workers} | " + " | ".join(cells) + " |")
    step = entry["train_step"]
    if step is not None:
        best = max(img_s["jax"].values(), default=None)
        share = _fmt(_ratio(best, step["img_s"]), "ratio")
        lines += [
            "",
            f"The JAX training step it feeds ({entry['step_arch']}, {size}, batch "
            f"{entry['step_batch']}, data already on the device): "
            f"{_fmt(step['img_s'], 'img_s')} img/s; the fastest seres loader above delivers "
            f"{share} that.",
        ]
    errors = _error_lines("input pipeline", entry["errors"])
    return lines + (["", *errors] if errors else [])


# --------------------------------------------------------------------------- eval


def empty_eval_entry(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings``: arch, image_size, batch, images, workers, repeats."""
    return {
        **settings,
        "img_s": dict.fromkeys(DATA_IMPLS),
        "model_img_s": dict.fromkeys(DATA_IMPLS),
        "jax_first_call_s": None,
        "jax_vs_torch": {"img_s": None, "model_img_s": None},
        "errors": {},
        "runs": {},
    }


def fill_eval(entry: dict[str, Any], impl: str, result: dict[str, Any]) -> None:
    """One framework's eval child answer; the ratios once both are in."""
    entry["runs"][impl] = result
    if "fatal" in result:
        entry["errors"][impl] = result["fatal"]
        return
    entry["img_s"][impl] = result["end_to_end_img_s"]
    entry["model_img_s"][impl] = result["model_img_s"]
    if impl == "jax":
        entry["jax_first_call_s"] = result["first_call_s"]
    for key in ("img_s", "model_img_s"):
        entry["jax_vs_torch"][key] = _ratio(entry[key]["jax"], entry[key]["torch"])


def eval_markdown(entry: dict[str, Any]) -> list[str]:
    size = f"{entry['image_size']}×{entry['image_size']}"
    lines = [
        "",
        f"## `seres eval` against seres_torch ({entry['arch']}, {size}, batch {entry['batch']}, "
        f"{entry['images']} validation JPEGs, loader workers: {entry['workers']})",
        "",
        "End to end: `seres_jax.train.evaluate_variables` (what `seres eval` runs; its own "
        "images/s) against `model.eval()` under `torch.inference_mode()` over a `DataLoader` "
        "doing the same PIL work. Model only: the same decoded batches, prepared before timing. "
        f"Median of {entry['repeats']} passes after one untimed pass; JAX's first call "
        f"(compilation included): {_fmt(entry['jax_first_call_s'], 's')} s.",
        "",
        "| measurement | seres (JAX) img/s | seres_torch img/s | JAX ÷ torch |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = (("end to end (decode, crop, model)", "img_s"), ("model only", "model_img_s"))
    for title, key in rows:
        cells = [
            _fmt(entry[key]["jax"], "img_s"),
            _fmt(entry[key]["torch"], "img_s"),
            _fmt(entry["jax_vs_torch"][key], "ratio"),
        ]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    errors = _error_lines("eval", entry["errors"])
    return lines + (["", *errors] if errors else [])


def data_markdown(results: dict[str, Any]) -> str:
    """The report's data sections (empty if neither ran)."""
    lines = []
    if "input_pipeline" in results:
        lines += pipeline_markdown(results["input_pipeline"])
    if "eval" in results:
        lines += eval_markdown(results["eval"])
    return "\n".join(lines) + "\n" if lines else ""


# --------------------------------------------------------------------------- the run


def run_data_benchmarks(
    results: dict[str, Any],
    *,
    pipeline: bool,
    evaluation: bool,
    quick: bool,
    repeats: int,
    device: str,
    seed: int,
    timeout: float,
    tmp: Path,
    log: Callable[[str], None],
) -> None:
    """Writes the image folder into ``tmp``, runs the requested sections' children and puts
    ``results["input_pipeline"]`` / ``results["eval"]``."""
    data = DATA_QUICK if quick else DATA
    root = make_photo_folder(tmp / "photos", data["train_images"], data["val_images"], seed=seed)
    common = {"root": str(root), "arch": data["arch"], "seed": seed, "repeats": repeats}
    if pipeline:
        results["input_pipeline"] = _run_pipeline(data, common, device, timeout, tmp, log)
    if evaluation:
        results["eval"] = _run_eval(data, common, device, timeout, tmp, log)


def _run_pipeline(
    data: dict[str, Any], common: dict[str, Any], device: str, timeout: float, tmp: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    entry = empty_pipeline_entry({
        "transform": "decode + RandomResizedCrop + flip + normalise",
        "image_size": data["image_size"], "batch": data["loader_batch"],
        "train_images": data["train_images"], "workers": list(data["loader_workers"]),
        "warmup": data["loader_warmup"], "batches": data["loader_batches"],
        "repeats": common["repeats"], "step_arch": data["arch"],
        "step_batch": data["step_batch"],
    })  # fmt: skip
    spec = {**common, "kind": "pipeline", "batch": data["loader_batch"],
            "warmup": data["loader_warmup"], "batches": data["loader_batches"]}  # fmt: skip
    # Alternating the loaders per worker count, so that a change in the machine's load
    # hits both sides of a ratio alike.
    for workers in data["loader_workers"]:
        for impl in DATA_IMPLS:
            log(f"[input pipeline] {impl}, {workers} workers ...")
            env = worker_env("pipeline", impl, device, tmp / f"pipeline-{impl}-{workers}")
            result = run_worker({**spec, "impl": impl, "workers": workers}, env, timeout)
            fill_pipeline(entry, impl, workers, result)
    log(f"[input pipeline] jax training step, {data['arch']} at batch {data['step_batch']} ...")
    step_spec = {
        "kind": "model", "impl": "jax", "arch": data["arch"], "image_size": data["image_size"],
        "batch": data["step_batch"], "steps": data["step_steps"], "repeats": common["repeats"],
        "warmup": 1, "device": device, "bf16": False, "seed": common["seed"],
    }  # fmt: skip
    env = worker_env("model", "jax", device, tmp / "pipeline-step")
    fill_train_step(entry, run_worker(step_spec, env, timeout))
    return entry


def _run_eval(
    data: dict[str, Any], common: dict[str, Any], device: str, timeout: float, tmp: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    entry = empty_eval_entry({
        "arch": data["arch"], "image_size": data["image_size"], "batch": data["eval_batch"],
        "images": data["val_images"], "workers": data["eval_workers"],
        "repeats": common["repeats"],
    })  # fmt: skip
    spec = {**common, "kind": "eval", "batch": data["eval_batch"],
            "workers": data["eval_workers"]}  # fmt: skip
    for impl in DATA_IMPLS:
        log(f"[eval] {impl}, {data['arch']} at batch {data['eval_batch']} ...")
        env = worker_env("eval", impl, device, tmp / f"eval-{impl}")
        fill_eval(entry, impl, run_worker({**spec, "impl": impl}, env, timeout))
    return entry
