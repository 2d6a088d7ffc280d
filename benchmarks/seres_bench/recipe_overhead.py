"""The recipe-overhead section, parent side: what timm's recipe pieces cost in the JAX training
step. Per model (``RECIPE_MODELS``) and variant (``RECIPE_VARIANTS``: baseline with all off,
model EMA, stochastic depth, gradient accumulation over 2 micro-batches of the same global
batch, all three), the training step's images/s in a child process of its own (the ``recipe``
worker: ``model_worker``'s training phase, first call alone, warm-up, median of repetitions),
and each variant's overhead against the baseline measured in the same run.

**Fairness on a shared machine.** Each variant runs in ``rounds`` children (2 by default), the
variants' order reversed from one round to the next (baseline first, then last, ...), so a
change of the machine's load hits every variant alike on average. A variant's images/s is the
median of all its repetitions, pooled over the rounds; the overhead is ``baseline ÷ variant -
1`` (the extra step time, in %). The overhead per round (the variant against the baseline of
the same round) and the baseline's spread over the rounds are kept, to show the noise.

``results["recipe_overhead"]`` carries its own date, command, machine load and versions, so it
can be measured alone (``bench.py --only recipe``) and merged into a results file of the other
sections."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .configs import (
    QUICK,
    RECIPE_ACCUM,
    RECIPE_DROP_PATH_RATE,
    RECIPE_EMA,
    RECIPE_GOALS_PCT,
    RECIPE_MODELS,
    RECIPE_VARIANTS,
    RecipeModel,
    RecipeVariant,
)
from .machine import loadavg
from .report import _fmt, measured_line, section_header, sgd_recipe
from .worker import run_worker, worker_env

# --------------------------------------------------------------------------- the variants


def variant_label(model: RecipeModel, variant: RecipeVariant) -> str | None:
    """What ``variant`` runs on ``model``: its label, or ``None`` when the model lacks its only
    piece (drop path on a model without stochastic depth). ``all`` on such a model runs the
    other pieces and says so."""
    if variant.drop_path and not model.drop_path:
        if not (variant.ema or variant.grad_accum_steps > 1):
            return None
        pieces = ["EMA"] if variant.ema else []
        if variant.grad_accum_steps > 1:
            pieces.append(f"accumulation {variant.grad_accum_steps}")
        return " + ".join(pieces) + " (no drop path)"
    return variant.label


def variant_spec(model: RecipeModel, variant: RecipeVariant) -> dict[str, Any]:
    """The worker spec's recipe keys for ``variant`` on ``model``."""
    arch = model.arch
    if variant.drop_path and model.drop_path:
        arch += ("," if ":" in arch else ":") + f"drop_path_rate={RECIPE_DROP_PATH_RATE}"
    return {
        "arch": arch,
        "ema": dict(RECIPE_EMA) if variant.ema else None,
        "grad_accum_steps": variant.grad_accum_steps,
    }


def round_order(names: list[str], round_index: int) -> list[str]:
    """The variants' order in a round: as listed in even rounds, reversed in odd ones."""
    return names if round_index % 2 == 0 else names[::-1]


# --------------------------------------------------------------------------- results


def empty_model_entry(
    model: RecipeModel, image_size: int, batch: int, steps: int, rounds: int
) -> dict[str, Any]:
    variants: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, variant in RECIPE_VARIANTS.items():
        label = variant_label(model, variant)
        if label is None:
            skipped[name] = f"{model.arch} has no stochastic depth: no drop_path_rate"
            continue
        spec = variant_spec(model, variant)
        variants[name] = {
            "label": label,
            "arch": spec["arch"],
            "ema": spec["ema"],
            "grad_accum_steps": variant.grad_accum_steps,
            "micro_batch": batch // variant.grad_accum_steps,
            "img_s": None,
            "overhead_pct": None,
            "best_img_s": None,  # from the fastest repetition of all rounds
            "best_overhead_pct": None,
            # One slot per round (None where that round's child failed).
            "rounds_img_s": [None] * rounds,
            "overhead_pct_rounds": [None] * rounds,
            "first_step_s": [None] * rounds,
            # Each timed repetition's seconds per step, per round; and what the round ran
            # (``cut``: fewer repetitions or steps than asked, to fit the budget).
            "step_s": [[] for _ in range(rounds)],
            "steps_run": [None] * rounds,
            "repeats_run": [None] * rounds,
            "cut": [None] * rounds,
            "rounds_skipped": [],  # rounds not run: the first was cut, the step is that slow
            "loadavg": [None] * rounds,  # the 1/5/15-min load average when the child started
        }
    return {
        "arch": model.arch,
        "description": model.description,
        "image_size": image_size,
        "batch": batch,
        "steps": steps,
        "precision": None,
        "params": None,
        "variants": variants,
        "baseline_spread_pct": None,
        "skipped": skipped,
        "errors": {},
        "runs": {name: [None] * rounds for name in variants},
    }


def fill_variant(
    entry: dict[str, Any],
    name: str,
    round_index: int,
    result: dict[str, Any],
    load: list[float] | None = None,
) -> None:
    """One child's answer for variant ``name`` in round ``round_index``."""
    entry["runs"][name][round_index] = result
    variant = entry["variants"][name]
    variant["loadavg"][round_index] = load
    if "fatal" in result or "train" not in result:
        entry["errors"][f"{name}, round {round_index + 1}"] = result.get("fatal", "no answer")
        return
    entry["params"] = entry["params"] or result["params"]
    entry["precision"] = entry["precision"] or result["precision"]
    train = result["train"]
    steps = train.get("steps", entry["steps"])
    step_s = train.get("step_s") or [t / steps for t in train["rep_s"]]
    variant["step_s"][round_index] = step_s
    variant["rounds_img_s"][round_index] = entry["batch"] / statistics.median(step_s)
    variant["first_step_s"][round_index] = train["first_step_s"]
    variant["steps_run"][round_index] = steps
    variant["repeats_run"][round_index] = len(train["rep_s"])
    variant["cut"][round_index] = bool(train.get("cut"))


def _overhead_pct(baseline: float | None, variant: float | None) -> float | None:
    """Extra step time of the variant, in % of the baseline's (from images/s)."""
    if baseline is None or not variant:
        return None
    return (baseline / variant - 1.0) * 100.0


def finish_model(entry: dict[str, Any]) -> None:
    """Pooled images/s per variant (the median repetition, and the fastest), overheads against
    the baseline (pooled, per round, fastest against fastest) and the baseline's spread over
    the rounds."""
    for variant in entry["variants"].values():
        pooled = [t for reps in variant["step_s"] for t in reps]
        variant["img_s"] = entry["batch"] / statistics.median(pooled) if pooled else None
        variant["best_img_s"] = entry["batch"] / min(pooled) if pooled else None
    baseline = entry["variants"].get("baseline")
    if baseline is None:
        return
    for name, variant in entry["variants"].items():
        if name == "baseline":
            continue
        variant["overhead_pct"] = _overhead_pct(baseline["img_s"], variant["img_s"])
        variant["best_overhead_pct"] = _overhead_pct(baseline["best_img_s"], variant["best_img_s"])
        variant["overhead_pct_rounds"] = [
            _overhead_pct(b, v)
            for b, v in zip(baseline["rounds_img_s"], variant["rounds_img_s"], strict=True)
        ]
    base_rounds = [v for v in baseline["rounds_img_s"] if v is not None]
    if len(base_rounds) > 1:
        spread = (max(base_rounds) - min(base_rounds)) / statistics.median(base_rounds)
        entry["baseline_spread_pct"] = spread * 100.0


def goal_status(name: str, variant: dict[str, Any]) -> str:
    """Against the issue's target (EMA, drop path): ``met`` when both the median of the
    per-round overheads and the fastest-against-fastest overhead are at most the target,
    ``over`` when both are above it, else ``within noise``; empty for variants without a
    target. (The median of the rounds, not every round: a round whose children ran in
    different states of the machine is off by ~80 % on 2 cores.)"""
    goal = RECIPE_GOALS_PCT.get(name)
    if goal is None or variant["overhead_pct"] is None:
        return ""
    rounds = [v for v in variant["overhead_pct_rounds"] if v is not None]
    typical = statistics.median(rounds) if rounds else variant["overhead_pct"]
    fastest = variant.get("best_overhead_pct")
    values = [typical] + ([fastest] if fastest is not None else [])
    if max(values) <= goal:
        verdict = "met"
    elif min(values) > goal:
        verdict = "over"
    else:
        verdict = "within noise"
    return f"≤ {goal:g} %: {verdict}"


# --------------------------------------------------------------------------- Markdown


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f} %"


def _load_range(entry: dict[str, Any]) -> str:
    ones = [load[0] for v in entry["variants"].values() for load in v["loadavg"] if load]
    if not ones:
        return "?"
    low, high = min(ones), max(ones)
    return f"{low:.1f}" if low == high else f"{low:.1f}–{high:.1f}"


def recipe_markdown(results: dict[str, Any]) -> str:
    """The report's recipe-overhead section (empty if it did not run)."""
    section = results.get("recipe_overhead")
    if not section:
        return ""
    s = section["settings"]
    ema = s["ema"]
    lines = [
        "",
        "## Recipe overhead (JAX training step)",
        "",
        measured_line(section),
        "",
        f"`seres_jax.train.train_step` ({s['recipe']['optimizer']} as above) with timm's "
        f"recipe pieces: **EMA** `EmaConfig(decay={ema['decay']}, use_warmup="
        f"{ema['use_warmup']})` updated in the step; **drop path** `drop_path_rate="
        f"{s['drop_path_rate']}` in the architecture string; **accumulation** "
        f"`grad_accum_steps={s['grad_accum_steps']}` (the same global batch as "
        f"{s['grad_accum_steps']} micro-batches). Each variant in one child process per "
        f"round (rounds per model below), the order reversed every other round; per child the "
        f"first call alone, {s['warmup']} warm-up step(s), {s['repeats']} repetitions. "
        "img/s: the median repetition over all rounds; overhead: extra step time against the "
        "baseline (baseline img/s ÷ variant img/s − 1), pooled and per round (the variant "
        "against the same round's baseline), and fastest repetition against fastest (other work "
        "holding a core for minutes slows every step steadily, ~2× on 2 cores; the fastest "
        "repetition is the least disturbed). A goal is *met* when the median round and the "
        "fastest are both within it, *over* when neither is.",
        "",
        "| model | variant | img/s | img/s per round | overhead | overhead per round "
        "| overhead, fastest | goal |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    notes = []
    for name, entry in section["models"].items():
        size = entry["image_size"]
        params = f"{entry['params'] / 1e6:.2f} M params" if entry["params"] else "? params"
        measured = entry.get("measured", {})
        n_rounds = measured.get("rounds") or max(
            (len(v["cut"]) for v in entry["variants"].values()), default=0
        )
        when = measured.get("created")
        label = (
            f"{name}: `{entry['arch']}` ({size}×{size}, batch {entry['batch']}, "
            f"{entry['precision'] or '?'}, {entry['steps']} steps/repetition, {n_rounds} "
            f"round(s), {params}; load {_load_range(entry)}"
            + (f"; measured {when}" if when and when != section["created"] else "")
            + ")"
        )
        for vname, variant in entry["variants"].items():
            ran = [i for i in range(len(variant["cut"])) if i not in variant["rounds_skipped"]]
            rounds = ", ".join(
                _fmt(variant["rounds_img_s"][i], "img_s") + ("*" if variant["cut"][i] else "")
                for i in ran
            )
            per_round = ", ".join(_pct(variant["overhead_pct_rounds"][i]) for i in ran)
            overhead = _pct(variant["overhead_pct"])
            if vname == "baseline":
                per_round = "—"
                overhead = "—"
                if entry["baseline_spread_pct"] is not None:
                    per_round = f"spread {entry['baseline_spread_pct']:.1f} %"
            cells = [
                variant["label"],
                _fmt(variant["img_s"], "img_s"),
                rounds,
                overhead,
                per_round,
                "—" if vname == "baseline" else _pct(variant["best_overhead_pct"]),
                goal_status(vname, variant),
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            label = ""
        for vname, variant in entry["variants"].items():
            cut = [i for i, c in enumerate(variant["cut"]) if c]
            if cut:
                runs = ", ".join(
                    f"{variant['repeats_run'][i]} × {variant['steps_run'][i]} step(s)" for i in cut
                )
                rounds_run = len(variant["cut"]) - len(variant["rounds_skipped"])
                notes.append(
                    f"{name} / {vname}: * repetitions cut to the {s.get('budget_s'):g} s "
                    f"budget ({runs} instead of {s['repeats']} × {entry['steps']}), "
                    f"{rounds_run} round(s)"
                )
        for vname, reason in entry["skipped"].items():
            notes.append(f"{name} / {vname}: skipped ({reason})")
        for key, error in entry["errors"].items():
            first_line = error.splitlines()[0] if error else ""
            notes.append(f"{name} / {key}: error: {first_line[:160]}")
    for note in section.get("notes", []):
        notes.append(note)
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the run


def recipe_image_size(model: RecipeModel, device: str) -> int:
    """The model's image size: the CPU's (reduced) one, or on an accelerator the full one."""
    if device != "cpu" and model.accel_image_size:
        return model.accel_image_size
    return model.image_size


def run_recipe_overhead(
    results: dict[str, Any],
    *,
    models: list[str],
    device: str,
    quick: bool,
    repeats: int,
    warmup: int,
    rounds: int,
    steps: int | None,
    budget_s: float | None,
    seed: int,
    timeout: float,
    tmp: Path,
    log: Callable[[str], None],
) -> None:
    """Every model's variants, ``rounds`` children each, into ``results["recipe_overhead"]``."""
    section: dict[str, Any] = {
        **section_header(),
        "settings": {
            "device": device,
            "quick": quick,
            "repeats": repeats,
            "warmup": warmup,
            "rounds": rounds,
            "budget_s": budget_s,
            "seed": seed,
            "ema": dict(RECIPE_EMA),
            "drop_path_rate": RECIPE_DROP_PATH_RATE,
            "grad_accum_steps": RECIPE_ACCUM,
            "goals_pct": dict(RECIPE_GOALS_PCT),
            "recipe": sgd_recipe(),
            "jax": {},
        },
        "models": {},
        "notes": [],
    }
    results["recipe_overhead"] = section
    for name in models:
        model = RECIPE_MODELS[name]
        size = recipe_image_size(model, device)
        batch = min(model.batch, QUICK["batch"]) if quick else model.batch
        n_steps = QUICK["steps"] if quick else (steps or model.steps)
        entry = empty_model_entry(model, size, batch, n_steps, rounds)
        entry["measured"] = {
            "created": section["created"],
            "command": section["command"],
            "rounds": rounds,
            "repeats": repeats,
            "warmup": warmup,
            "budget_s": budget_s,
            "loadavg_start": loadavg(),
        }
        section["models"][name] = entry
        base = {
            "kind": "recipe", "impl": "jax", "image_size": size, "batch": batch,
            "steps": n_steps, "repeats": repeats, "warmup": warmup, "device": device,
            "bf16": model.bf16, "seed": seed, "budget_s": budget_s,
        }  # fmt: skip
        names = list(entry["variants"])
        for round_index in range(rounds):
            for vname in round_order(names, round_index):
                variant = entry["variants"][vname]
                if round_index and variant["cut"][0]:
                    # Cut to the budget in round 1: a step that slow is far beyond the
                    # machine's noise, and another round would take minutes.
                    variant["rounds_skipped"].append(round_index)
                    continue
                spec = {**base, **variant_spec(model, RECIPE_VARIANTS[vname])}
                load = loadavg()
                log(f"[recipe {name}] {vname}, round {round_index + 1}/{rounds} (load {load}) ...")
                env = worker_env("model", "jax", device, tmp / f"recipe-{name}-{vname}")
                result = run_worker(spec, env, timeout)
                fill_variant(entry, vname, round_index, result, load)
                if "info" in result:
                    section["settings"]["jax"].update(result["info"])
                got = entry["variants"][vname]["rounds_img_s"][round_index]
                log(f"[recipe {name}] {vname}: " + (f"{got:.1f} img/s" if got else "error"))
        finish_model(entry)
        entry["measured"]["loadavg_end"] = loadavg()
    if device == "cpu" and "seresnet50" in models:
        section["notes"].append(
            f"seresnet50 at {RECIPE_MODELS['seresnet50'].image_size}×"
            f"{RECIPE_MODELS['seresnet50'].image_size} on the CPU, not 224×224 (minutes per "
            "run on 2 cores); on an accelerator the section measures 224×224"
        )
    section["machine"]["loadavg_end"] = loadavg()
