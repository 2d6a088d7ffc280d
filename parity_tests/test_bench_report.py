"""The benchmark's report (``benchmarks/seres_bench``): the compilation-cache figures reach the
JSON entry and the Markdown table; a failed cache run is an error note, not a number."""

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
