"""The benchmark's recipe-overhead section (``benchmarks/seres_bench/recipe_overhead.py``), from
canned worker answers: variants a model cannot run are skipped or relabelled, images/s pool the
rounds, overheads are against the same run's baseline (per round too), a step over the budget is
cut and measured once, the section renders, and ``--only`` merges it into an earlier results
file without touching the other sections."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from seres_bench import configs, measure, recipe_overhead, report

    return configs, measure, recipe_overhead, report


def _answer(step_s: list[float], steps: int = 2, cut: bool = False) -> dict:
    reps = [t * steps for t in step_s]
    train = {"first_step_s": 5.0, "rep_s": reps, "img_s": 0.0, "steps": steps, "cut": cut}
    return {"params": 700_000, "precision": "fp32", "info": {}, "train": train}


def test_variants_of_a_model_without_drop_path(bench):
    configs, _, recipe, _ = bench
    tiny, zoo = configs.RECIPE_MODELS["tiny"], configs.RECIPE_MODELS["tiny_zoo"]
    entry = recipe.empty_model_entry(tiny, 32, 128, 2, rounds=2)
    assert "drop_path" not in entry["variants"] and "drop_path" in entry["skipped"]
    assert entry["variants"]["all"]["label"] == "EMA + accumulation 2 (no drop path)"
    assert entry["variants"]["all"]["arch"] == "seresnet_tiny"
    spec = recipe.variant_spec(zoo, configs.RECIPE_VARIANTS["all"])
    assert spec["arch"] == zoo.arch + ",drop_path_rate=0.05"
    assert spec["ema"] == {"decay": 0.9998, "use_warmup": True}
    assert spec["grad_accum_steps"] == 2
    assert recipe.variant_spec(zoo, configs.RECIPE_VARIANTS["baseline"])["arch"] == zoo.arch
    assert recipe.round_order(["a", "b", "c"], 1) == ["c", "b", "a"]


def _canned_section(bench) -> dict:
    configs, _, recipe, _ = bench
    entry = recipe.empty_model_entry(configs.RECIPE_MODELS["tiny"], 32, 128, 2, rounds=2)
    # baseline: 1.0 s/step in round 1, 1.1 in round 2; EMA 2 % slower in each round.
    recipe.fill_variant(entry, "baseline", 0, _answer([1.0, 1.0, 1.0]), [2.0, 2.0, 2.0])
    recipe.fill_variant(entry, "baseline", 1, _answer([1.1, 1.1, 1.1]), [3.0, 2.0, 2.0])
    recipe.fill_variant(entry, "ema", 0, _answer([1.02, 1.02, 1.02]), [2.5, 2.0, 2.0])
    recipe.fill_variant(entry, "ema", 1, _answer([1.122, 1.122, 1.122]), [2.5, 2.0, 2.0])
    # accumulation: 30 s/step, cut to one repetition of one step, round 2 not run.
    recipe.fill_variant(entry, "accum2", 0, _answer([30.0], steps=1, cut=True), [2.0, 2.0, 2.0])
    entry["variants"]["accum2"]["rounds_skipped"].append(1)
    recipe.fill_variant(entry, "all", 0, {"fatal": "worker exited with status 1: boom"})
    recipe.finish_model(entry)
    settings = {
        "device": "cpu", "quick": False, "repeats": 3, "warmup": 1, "rounds": 2,
        "budget_s": 60.0, "ema": {"decay": 0.9998, "use_warmup": True},
        "drop_path_rate": 0.05, "grad_accum_steps": 2, "recipe": {"optimizer": "sgd"},
    }  # fmt: skip
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "command": ["bench.py", "--only", "recipe"],
        "machine": {"cpu": "cpu", "cores": 2, "loadavg_start": [2.0], "loadavg_end": [3.0]},
        "settings": settings,
        "models": {"tiny": entry},
        "notes": [],
    }


def test_pooled_images_per_second_and_overheads(bench):
    section = _canned_section(bench)
    variants = section["models"]["tiny"]["variants"]
    # Pooled median of 1.0 x3 and 1.1 x3 is 1.05 s/step.
    assert variants["baseline"]["img_s"] == pytest.approx(128 / 1.05)
    assert variants["ema"]["overhead_pct_rounds"] == pytest.approx([2.0, 2.0])
    assert variants["ema"]["overhead_pct"] == pytest.approx((1.071 / 1.05 - 1) * 100)
    assert variants["accum2"]["img_s"] == pytest.approx(128 / 30)
    # Fastest against fastest: 1.02 s against 1.0 s per step.
    assert variants["ema"]["best_img_s"] == pytest.approx(128 / 1.02)
    assert variants["ema"]["best_overhead_pct"] == pytest.approx(2.0)
    assert variants["accum2"]["overhead_pct_rounds"][1] is None
    assert variants["all"]["img_s"] is None
    rounds = variants["baseline"]["rounds_img_s"]
    assert rounds == pytest.approx([128 / 1.0, 128 / 1.1])
    spread = (rounds[0] - rounds[1]) / ((rounds[0] + rounds[1]) / 2) * 100
    assert section["models"]["tiny"]["baseline_spread_pct"] == pytest.approx(spread)
    _, _, recipe, _ = bench
    assert recipe.goal_status("ema", variants["ema"]) == "≤ 3 %: met"
    assert recipe.goal_status("accum2", variants["accum2"]) == ""


def test_section_markdown(bench):
    _, _, recipe, _ = bench
    markdown = recipe.recipe_markdown({"recipe_overhead": _canned_section(bench)})
    assert "## Recipe overhead (JAX training step)" in markdown
    assert "| baseline (all off) | 122 | 128, 116 | — | spread 9.5 % | — |  |\n" in markdown
    assert "| EMA | 120 | 125, 114 | +2.0 % | +2.0 %, +2.0 % | +2.0 % | ≤ 3 %: met |\n" in markdown
    # Pooled: against the baseline's 1.05 s/step; per round: against round 1's 1.0 s/step.
    assert "| accumulation 2 | 4.3 | 4.3* | +2757.1 % | +2900.0 % | +2900.0 % |  |\n" in markdown
    assert "- tiny / accum2: * repetitions cut to the 60 s budget (1 × 1 step(s)" in markdown
    assert "- tiny / drop_path: skipped (seresnet_tiny has no stochastic depth: no" in markdown
    assert "- tiny / all, round 1: error: worker exited with status 1: boom\n" in markdown
    assert recipe.recipe_markdown({}) == ""


def test_only_recipe_merges_into_earlier_results(bench):
    _, _, _, report = bench
    old = {
        "created": "old", "machine": {"cpu": "old"}, "settings": {"device": "cpu"},
        "configs": {"tiny": {"train_img_s": 1}}, "converter": {"mb_s": 1}, "convert_mb_s": 1,
        "eval": {"img_s": 2},
        "recipe_overhead": {"created": "older", "models": {"tiny": 1, "tiny_zoo": 2},
                            "notes": ["a"]},
    }  # fmt: skip
    recipe = {"created": "new", "models": {"tiny_zoo": 3}, "notes": ["a", "b"]}
    new = {"created": "new", "machine": {"cpu": "new"}, "configs": {}, "recipe_overhead": recipe}
    merged = report.merge_results(old, new, {"recipe"})
    # The section's models merge by name: a run of tiny_zoo alone keeps tiny.
    assert merged["recipe_overhead"] == {
        "created": "new", "models": {"tiny": 1, "tiny_zoo": 3}, "notes": ["a", "b"]
    }  # fmt: skip
    assert {k: merged[k] for k in old if k != "recipe_overhead"} == {
        k: v for k, v in old.items() if k != "recipe_overhead"
    }
    models = {"created": "new", "configs": {"wide": {"train_img_s": 3}}}
    merged = report.merge_results(old, models, {"models"})
    assert merged["created"] == "new" and set(merged["configs"]) == {"tiny", "wide"}


def test_budget_cuts_slow_steps(bench, monkeypatch):
    _, measure, _, _ = bench
    clock = [0.0]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])

    def run(seconds_per_step: float):
        def step(n: int) -> None:
            clock[0] += n * seconds_per_step

        return step

    spec = {"steps": 2, "repeats": 5, "warmup": 1}
    fast = measure.measure_budgeted(run(1.0), 16, spec, budget_s=60)
    assert (fast["repeats"], fast["cut"], len(fast["rep_s"])) == (5, False, 5)
    assert fast["img_s"] == pytest.approx(16.0)
    medium = measure.measure_budgeted(run(10.0), 16, spec, budget_s=60)
    assert (medium["repeats"], medium["cut"]) == (3, True)  # 20 + 20 + 20 s
    slow = measure.measure_budgeted(run(40.0), 16, spec, budget_s=60)
    assert (slow["repeats"], slow["cut"]) == (1, True)
    assert slow["step_s"] == [40.0] and slow["img_s"] == pytest.approx(0.4)
