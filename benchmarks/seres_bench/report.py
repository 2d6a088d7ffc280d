"""The results: one entry per configuration filled from the workers' answers, the JAX ÷ PyTorch
ratios (and, where ``jax_nnx`` ran, NNX ÷ linen and NNX ÷ PyTorch), and the Markdown report
(``results.md``, also printed)."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .configs import IMPLS, LR, MOMENTUM, NESTEROV, NNX_GOAL, WEIGHT_DECAY, BenchConfig
from .machine import loadavg, machine_info, versions

CACHE_RUNS = ("cold", "warm")
# The sections a run can measure (``--only``) and the results keys each one writes.
SECTIONS = (
    "models",
    "convert",
    "pipeline",
    "eval",
    "recipe",
    "augment",
    "nnx-design",
    "eval-cost",
    "predict",
)
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
    "nnx-design": ("nnx_design",),
    "eval-cost": ("eval_cost",),
    "predict": ("predict",),
}
# The sections whose models a run of some of them merges by name into the earlier file's.
MODEL_SECTIONS = ("recipe_overhead", "nnx_design")
# The ratios of the NNX implementation, against these (entry key ``jax_nnx_vs_<other>``).
NNX_RATIO_IMPLS = ("jax", "torch_eager", "torch_compile")
# The run's header: machine, versions, settings (those of the model configurations).
HEADER_KEYS = ("schema", "created", "command", "machine", "versions", "settings")


def section_header() -> dict[str, Any]:
    """The head every run and opt-in section records: when (UTC), the command line, the machine
    with its load average now (the caller adds ``loadavg_end`` when done) and the versions."""
    machine = machine_info()
    # Other work on the machine distorts everything (torch's OpenMP threads most of all):
    # the load average before and after lets a reader judge.
    machine["loadavg_start"] = loadavg()
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "machine": machine,
        "versions": versions(),
    }


def sgd_recipe() -> dict[str, Any]:
    """The training recipe every JAX and PyTorch step here uses, as the results record it."""
    return {
        "optimizer": "sgd",
        "lr": LR,
        "momentum": MOMENTUM,
        "weight_decay": WEIGHT_DECAY,
        "nesterov": NESTEROV,
    }


def measured_line(section: dict[str, Any]) -> str:
    """An opt-in section's Markdown line saying when, how and on what it was measured."""
    s, m = section["settings"], section["machine"]
    return (
        f"Measured {section['created']} (`{' '.join(section['command'])}`), --device "
        f"{s['device']}; {m['cpu']}, {m['cores']} cores; load average (1, 5, 15 min) "
        f"{m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end"
        + (" — **--quick smoke test, not a measurement**" if s["quick"] else "")
        + "."
    )


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
    the recipe-overhead and NNX design sections' models. The header
    (machine, load average, versions, settings) is the new run's only when it measured the
    model configurations, which it describes; the recipe-overhead, augmented-pipeline and NNX
    design sections carry their own."""
    merged = dict(old)
    if "models" in measured:
        merged.update({key: new[key] for key in HEADER_KEYS if key in new})
    for section in measured:
        for key in SECTION_KEYS[section]:
            if key not in new:
                continue
            if key == "configs":
                merged["configs"] = {**old.get("configs", {}), **new["configs"]}
            elif key in MODEL_SECTIONS and old.get(key):
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


def _ratios(entry: dict[str, Any], impl: str, other: str) -> dict[str, float | None]:
    first = entry["first_step_s"]
    return {
        "train_img_s": _ratio(entry["train_img_s"][impl], entry["train_img_s"][other]),
        "infer_img_s": _ratio(entry["infer_img_s"][impl], entry["infer_img_s"][other]),
        "first_step_train_s": _ratio(first[impl]["train"], first[other]["train"]),
        "first_step_infer_s": _ratio(first[impl]["infer"], first[other]["infer"]),
        "peak_mem_mib": _ratio(entry["peak_mem_mib"][impl], entry["peak_mem_mib"][other]),
    }


def add_ratios(entry: dict[str, Any]) -> None:
    """JAX ÷ other for every metric: > 1 means JAX is faster in img/s, slower in seconds,
    larger in MiB; and NNX ÷ other (linen ``jax`` included) the same way, where ``jax_nnx``
    was measured (from the same run: an entry is one run's)."""
    for other in ("torch_eager", "torch_compile"):
        entry[f"jax_vs_{other}"] = _ratios(entry, "jax", other)
    if entry["params_by_impl"].get("jax_nnx") is not None:
        for other in NNX_RATIO_IMPLS:
            entry[f"jax_nnx_vs_{other}"] = _ratios(entry, "jax_nnx", other)


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
    # .get: a results file written before an implementation existed has no key for it.
    def by_impl(values: dict[str, Any]) -> dict[str, float | None]:
        return {i: values.get(i) for i in IMPLS}

    yield "train img/s", by_impl(entry["train_img_s"]), "img_s"
    yield "infer img/s", by_impl(entry["infer_img_s"]), "img_s"
    first = entry["first_step_s"]
    yield "first train step s", {i: first.get(i, {}).get("train") for i in IMPLS}, "s"
    yield "first infer step s", {i: first.get(i, {}).get("infer") for i in IMPLS}, "s"
    yield "peak RSS MiB", by_impl(entry["peak_mem_mib"]), "mib"
    if any(v is not None for v in entry["device_peak_mib"].values()):
        yield "device peak MiB", by_impl(entry["device_peak_mib"]), "mib"


def _nnx_shown(configs: dict[str, Any]) -> bool:
    """Whether the table has the NNX column: ``jax_nnx`` ran (or failed) in a configuration."""
    return any(
        "jax_nnx" in entry["runs"] or "jax_nnx" in entry["errors"] for entry in configs.values()
    )


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
    # Without jax_nnx in the run the table is the one before NNX existed: JAX is linen.
    nnx = _nnx_shown(results["configs"])
    impls = IMPLS if nnx else tuple(i for i in IMPLS if i != "jax_nnx")
    ratio_pairs = [("jax", "torch_eager"), ("jax", "torch_compile")]
    if nnx:
        ratio_pairs += [("jax_nnx", "jax"), ("jax_nnx", "torch_eager")]
    if results["configs"]:
        names = {"jax": "JAX", "jax_nnx": "JAX NNX", "torch_eager": "PyTorch eager"}
        names["torch_compile"] = "torch.compile"
        short = {"jax": "JAX", "jax_nnx": "NNX", "torch_eager": "eager", "torch_compile": "compile"}
        if nnx:
            short["jax"] = "linen"
        heads = [names[i] for i in impls] + [f"{short[a]}/{short[b]}" for a, b in ratio_pairs]
        explain = (
            "Ratios are JAX ÷ PyTorch: above 1 JAX is faster in img/s, slower in seconds, "
            "larger in MiB."
        )
        if nnx:
            explain = (
                "JAX is the linen model (`seres_jax.train.train_step`), JAX NNX its Flax NNX twin "
                "(`seres_jax.nnx.train.compile_steps`), both compiled with the XLA options "
                "below; a ratio is the first ÷ the second, from the same run: above 1 the first "
                "is faster in img/s, slower in seconds, larger in MiB. The goal for NNX/linen "
                f"is ≥ {NNX_GOAL:g}× in img/s."
            )
        lines += [
            "",
            explain,
            "",
            "| config | metric | " + " | ".join(heads) + " |",
            "| --- | --- | " + " | ".join("---:" for _ in heads) + " |",
        ]
    notes = []
    for name, entry in results["configs"].items():
        params = f"{entry['params'] / 1e6:.2f} M params" if entry["params"] else "? params"
        size = entry["image_size"]
        label = f"{name} ({size}×{size}, batch {entry['batch']}, {entry['steps']} steps, {params})"
        for metric, values, kind in _metric_rows(entry):
            cells = [_cell(entry, impl, values[impl], kind) for impl in impls]
            ratios = [_fmt(_ratio(values[a], values[b]), "ratio") for a, b in ratio_pairs]
            lines.append(f"| {label} | {metric} | " + " | ".join(cells + ratios) + " |")
            label = ""
        counts = {i: n for i, n in entry["params_by_impl"].items() if n}
        if len(set(counts.values())) > 1:
            notes.append(f"{name}: parameter counts differ: {counts}")
        precisions = {i: p for i, p in entry["precision"].items() if p}
        if len(set(precisions.values())) > 1:
            notes.append(f"{name}: precisions differ: {precisions}")
        for impl, reason in entry["skipped"].items():
            if impl in impls:
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
