"""The benchmark's report (``benchmarks/seres_bench``): the compilation-cache figures reach the
JSON entry and the Markdown table; a failed cache run is an error note, not a number. The data
sections (input pipeline, eval speed) compute their ratios only from two measured numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from seres_bench import configs, report

    return configs, report


def _results(entry: dict) -> dict:
    return {
        "machine": {"cpu": "cpu", "cores": 2, "usable_cores": 2, "platform": "os"},
        "versions": {},
        "settings": {"device": "cpu", "bf16": False, "quick": True, "repeats": 1, "warmup": 1}
        | {"jax": {}, "torch": {}},
        "configs": {"tiny": entry},
    }


def test_compile_cache_figures_in_json_entry_and_markdown(report):
    configs, report = report
    entry = report.empty_entry("tiny", configs.CONFIGS["tiny"], 8, 2)
    answer = {"cache_entries": 3, "min_compile_time_s": 1.0}
    report.fill_compile_cache(
        entry, "cold", {"first_step_s": {"train": 8.0, "infer": 2.0}} | answer
    )
    report.fill_compile_cache(
        entry, "warm", {"first_step_s": {"train": 2.0, "infer": 1.5}} | answer
    )
    assert entry["jax_compile_cache"]["warm"] == {
        "train": 2.0,
        "infer": 1.5,
        "cache_entries": 3,
        "min_compile_time_s": 1.0,
    }
    markdown = report.render_markdown(_results(entry))
    assert "| tiny | first train step s | 8.00 | 2.00 | 0.25× |\n" in markdown
    assert "| tiny | first infer step s | 2.00 | 1.50 | 0.75× |\n" in markdown


def test_failed_cache_run_is_an_error_note(report):
    configs, report = report
    entry = report.empty_entry("tiny", configs.CONFIGS["tiny"], 8, 2)
    report.fill_compile_cache(entry, "cold", {"fatal": "worker exited with status 1: boom"})
    markdown = report.render_markdown(_results(entry))
    assert entry["jax_compile_cache"]["cold"]["train"] is None
    assert "- tiny / jax_compile_cache_cold: error: worker exited with status 1: boom\n" in markdown
    assert "## JAX persistent compilation cache" not in markdown


@pytest.fixture
def data_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from seres_bench import data_bench

    return data_bench


def test_pipeline_figures_ratios_and_markdown(data_bench):
    entry = data_bench.empty_pipeline_entry({
        "transform": "decode", "image_size": 224, "batch": 32, "train_images": 256,
        "workers": [1, 2], "warmup": 2, "batches": 8, "repeats": 5,
        "step_arch": "seresnet18", "step_batch": 16,
    })  # fmt: skip
    data_bench.fill_pipeline(entry, "jax", 1, {"img_s": 150.0, "startup_s": 3.0})
    data_bench.fill_pipeline(entry, "torch", 1, {"img_s": 100.0, "startup_s": 1.5})
    data_bench.fill_pipeline(entry, "jax", 2, {"img_s": 240.0, "startup_s": 3.5})
    data_bench.fill_pipeline(entry, "torch", 2, {"fatal": "worker exited with status 1: boom"})
    train = {"img_s": 12.0, "first_step_s": 30.0}
    data_bench.fill_train_step(entry, {"train": train, "params": 11_000_000, "errors": {}})
    assert entry["jax_vs_torch"] == {"1": 1.5}
    markdown = data_bench.data_markdown({"input_pipeline": entry})
    assert "| 1 | 150 | 100 | 1.50× | 3.00 | 1.50 |\n" in markdown
    assert "| 2 | 240 | – | – | 3.50 | – |\n" in markdown
    assert ": 12.0 img/s; the fastest seres loader above delivers 20.00× that." in markdown
    assert "- input pipeline / torch, 2 workers: error: worker exited with status 1: boom\n" in (
        markdown
    )


def test_eval_figures_ratios_and_markdown(data_bench):
    entry = data_bench.empty_eval_entry({
        "arch": "seresnet18", "image_size": 224, "batch": 32, "images": 128, "workers": 1,
        "repeats": 5,
    })  # fmt: skip
    jax = {"end_to_end_img_s": 30.0, "model_img_s": 40.0, "first_call_s": 9.0}
    data_bench.fill_eval(entry, "jax", jax)
    data_bench.fill_eval(entry, "torch", {"end_to_end_img_s": 20.0, "model_img_s": 50.0})
    assert entry["jax_vs_torch"] == {"img_s": 1.5, "model_img_s": 0.8}
    markdown = data_bench.data_markdown({"eval": entry})
    assert "| end to end (decode, crop, model) | 30.0 | 20.0 | 1.50× |\n" in markdown
    assert "| model only | 40.0 | 50.0 | 0.80× |\n" in markdown
    assert "(compilation included): 9.00 s." in markdown
    assert data_bench.data_markdown({}) == ""
