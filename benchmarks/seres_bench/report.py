"""The results: one entry per configuration filled from the workers' answers, the JAX ÷ PyTorch
ratios, and the Markdown report (``results.md``, also printed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .configs import IMPLS, BenchConfig

CACHE_RUNS = ("cold", "warm")
# The sections a run can measure (``--only``) and the results keys each one writes.
SECTIONS = ("models", "convert", "pipeline", "eval", "recipe", "augment")
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "models": ("configs",),
    "convert": (
        "converter",
        "convert_mb_s",
        "convert_back_mb_s",
        "memcpy_mb_s",
        "convert_vs_memcpy",
        "convert_back_vs_memcpy",
    ),
    "pipeline": ("input_pipeline",),
    "eval": ("eval",),
    "recipe": ("recipe_overhead",),
    "augment": ("augment_pipeline",),
}
# The run's header: machine, versions, settings (those of the model configurations).
HEADER_KEYS = ("schema", "created", "command", "machine", "versions", "settings")


def empty_entry(name: str, config: BenchConfig, batch: int, steps: int) -> dict[str, Any]:
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
        "jax_compile_cache": {
            run: dict.fromkeys(("train", "infer", "cache_entries", "min_compile_time_s"))
            for run in CACHE_RUNS
        },
        "errors": {},
        "skipped": {},
        "runs": {},
    }


def fill_entry(entry: dict[str, Any], impl: str, result: dict[str, Any]) -> None:
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


def fill_compile_cache(entry: dict[str, Any], run: str, result: dict[str, Any]) -> None:
    """One cache run's answer (``run`` is ``"cold"`` or ``"warm"``) into the entry."""
    if "fatal" in result:
        entry["errors"][f"jax_compile_cache_{run}"] = result["fatal"]
        return
    entry["jax_compile_cache"][run] = {
        **result["first_step_s"],
        "cache_entries": result["cache_entries"],
        "min_compile_time_s": result["min_compile_time_s"],
    }


def merge_results(old: dict[str, Any], new: dict[str, Any], measured: set[str]) -> dict[str, Any]:
    """``old`` (an earlier results file) with the ``measured`` sections of ``new`` in place of
    its own; the other sections stay as they were. Configurations merge by name, and so do
    the recipe-overhead section's models. The header
    (machine, load average, versions, settings) is the new run's only when it measured the
    model configurations, which it describes; the recipe-overhead and augmented-pipeline
    sections carry their own."""
    merged = dict(old)
    if "models" in measured:
        merged.update({key: new[key] for key in HEADER_KEYS if key in new})
    for section in measured:
        for key in SECTION_KEYS[section]:
            if key not in new:
                continue
            if key == "configs":
                merged["configs"] = {**old.get("configs", {}), **new["configs"]}
            elif key == "recipe_overhead" and old.get(key):
                # A run of some of its models keeps the others (each says when it ran).
                models = {**old[key].get("models", {}), **new[key]["models"]}
                notes = list(dict.fromkeys([*old[key].get("notes", []), *new[key]["notes"]]))
                merged[key] = {**new[key], "models": models, "notes": notes}
            else:
                merged[key] = new[key]
    for key in HEADER_KEYS:  # a first file written by a run of one section
        merged.setdefault(key, new.get(key))
    merged.setdefault("configs", {})
    return merged


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(entry: dict[str, Any]) -> None:
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


def _compile_cache_table(configs: dict[str, Any]) -> list[str]:
    """JAX's first calls, cold and warm cache, for the configurations that measured them."""
    rows = []
    for name, entry in configs.items():
        cache = entry.get("jax_compile_cache")  # absent in a file written with it skipped
        if cache is None:
            continue
        for phase in ("train", "infer"):
            cold, warm = cache["cold"][phase], cache["warm"][phase]
            if cold is None and warm is None:
                continue
            cells = [_fmt(cold, "s"), _fmt(warm, "s"), _fmt(_ratio(warm, cold), "ratio")]
            rows.append(f"| {name} | first {phase} step s | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "",
        "## JAX persistent compilation cache",
        "",
        "Cold: a fresh process compiling into an empty cache directory; warm: a second process "
        "with the same directory.",
        "",
        "| config | metric | cold | warm | warm ÷ cold |",
        "| --- | --- | ---: | ---: | ---: |",
        *rows,
    ]


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
    ]
    if results["configs"]:
        lines += [
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
    lines += _compile_cache_table(results["configs"])
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
