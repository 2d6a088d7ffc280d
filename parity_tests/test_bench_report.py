"""The benchmark's report (``benchmarks/seres_bench``): the compilation-cache figures reach the
JSON entry and the Markdown table; a failed cache run is an error note, not a number. The data
sections (input pipeline, eval speed) compute their ratios only from two measured numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from seres_bench import configs, report

    return configs, report


def bench_results(entry: dict) -> dict:
    """A results file around one configuration ``tiny``: what ``render_markdown`` reads (also
    ``test_bench_nnx``'s)."""
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
    markdown = report.render_markdown(bench_results(entry))
    assert "| tiny | first train step s | 8.00 | 2.00 | 0.25× |\n" in markdown
    assert "| tiny | first infer step s | 2.00 | 1.50 | 0.75× |\n" in markdown


def test_failed_cache_run_is_an_error_note(report):
    configs, report = report
    entry = report.empty_entry("tiny", configs.CONFIGS["tiny"], 8, 2)
    report.fill_compile_cache(entry, "cold", {"fatal": "worker exited with status 1: boom"})
    markdown = report.render_markdown(bench_results(entry))
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


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from seres_bench import cli, eval_cost, predict_bench, report

    return cli, eval_cost, predict_bench, report


def test_eval_cost_and_predict_are_opt_in_sections(bench, monkeypatch, tmp_path, capsys):
    """``--only eval-cost,predict`` runs those two sections alone (their measurements canned:
    each is minutes of child processes), with the flags passed through, into the JSON file and
    the Markdown; by default neither runs."""
    cli, eval_cost, predict_bench, report = bench
    default = cli.build_parser().parse_args([])
    assert not {"eval-cost", "predict"} & cli.apply_only(default)
    assert default.predict_rounds == 3 and not (default.eval_cost or default.predict)
    assert default.eval_cost_before is None and default.timm_inference is None
    cost_calls = []

    def fake_eval_cost(workdir, *, cases, python_path=None, warm=False):
        cost_calls.append(([c.name for c in cases], python_path))
        case = cases[0]
        report = {"batch_size": 15, "jax": {"images_per_s": 15.0, "compile_s": 1.4}}
        measured = {"status": 0, "wall_s": 4.5, "peak_rss_mib": 890.0, "report": report}
        return [{**vars(case), "name": case.name, **measured}]

    predict_calls = []

    def fake_predict(results, **kwargs):
        predict_calls.append(kwargs)
        walls = [("seres", 16, 8.0), ("seres", 48, 12.0), ("seres_torch", 16, 9.0),
                 ("seres_torch", 48, 17.0)]  # fmt: skip
        runs = [{"side": side, "images": n, "round": 0, "wall_s": wall, "maxrss_mib": 900.0}
                for side, n, wall in walls]  # fmt: skip
        settings = {"sizes": [16, 48], "arch": "seresnet50", "batch": 32, "workers": 2,
                    "topk": 5, "rounds": 1}  # fmt: skip
        section = {"settings": settings, "runs": runs, "errors": [], "reference": "seres_torch",
                   "reference_note": "no timm"}  # fmt: skip
        predict_bench._finish(section, kwargs["tmp"], ("seres", "seres_torch"))
        results["predict"] = section

    monkeypatch.setattr(eval_cost, "eval_cost", fake_eval_cost)
    monkeypatch.setattr(cli, "run_predict_bench", fake_predict)
    monkeypatch.delenv("SERES_TIMM_PYTHON", raising=False)
    before = tmp_path / "old-checkout"
    out = tmp_path / "results.json"
    argv = ["--only", "eval-cost,predict", "--quick", "--json", str(out), "--markdown",
            str(tmp_path / "results.md"), "--eval-cost-before", str(before),
            "--timm-inference", "/x/inference.py"]  # fmt: skip
    assert cli.main(argv) == 0
    # --quick: the first case alone, before (the old checkout) then after; predict one round.
    assert cost_calls == [(["15img_default"], before), (["15img_default"], None)]
    (kwargs,) = predict_calls
    assert (kwargs["quick"], kwargs["rounds"], kwargs["python"]) == (True, 1, None)
    assert kwargs["inference"] == "/x/inference.py"
    results = json.loads(out.read_text())
    assert results["configs"] == {} and "converter" not in results
    cost = results["eval_cost"]
    assert cost["settings"]["quick"] and cost["settings"]["before"] == str(before)
    assert cost["machine"]["loadavg_end"] is not None and cost["versions"]["python"]
    markdown = capsys.readouterr().out
    assert "## `seres eval`'s cost (seresnet50, 224, one process per case)" in markdown
    assert "**--quick smoke test, not a measurement**" in markdown
    assert "| 15 | default | no | 4.5 s, 0.87 GiB, 15.0 img/s (compile 1.4 s, batch 15) |" in (
        markdown
    )
    assert "## seres predict against seres_torch (timm not available)" in markdown
    assert "seres 8.0, seres_torch 4.0, ratio 2.00x." in markdown
    # Measured alone, they merge into an earlier file, whose other sections stay.
    old = {"configs": {"tiny": 1}, "predict": {"old": True}, "nnx_design": {"models": {}}}
    merged = report.merge_results(old, results, {"eval-cost", "predict"})
    assert merged["predict"] == results["predict"] and merged["eval_cost"] == cost
    assert merged["configs"] == {"tiny": 1} and merged["nnx_design"] == {"models": {}}
