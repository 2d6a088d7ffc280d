"""The benchmark's augmented input-pipeline section (``benchmarks/seres_bench/augment_pipeline.py``
and its timm runner), from canned child answers: images/s pool the rounds, the device's cost is
added to the host's as serial time, the ratios and the goal follow, the two sides alternate
round by round with per-worker batch counts, the timm side is skipped (and says so) without an
interpreter, ``--only augment`` selects and merges the section, and the timm runner's end of the
protocol (no seres import, its answer line, its failure answer, its posterize shim) holds."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from seres_bench import augment_pipeline, cli, configs, report, timm_augment_runner, worker

    return augment_pipeline, cli, configs, report, timm_augment_runner, worker


SETTINGS = {
    "workers": [1, 2], "batch": 8, "warmup_per_worker": 1, "batches_per_worker": 2,
    "repeats": 3, "rounds": 2, "image_size": 224, "train_images": 32,
    "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "re_mode": "pixel",
    "interpolation": "random", "color_jitter": 0.4, "device": "cpu", "quick": False,
}  # fmt: skip


def _seres(rep_s: list[float], erase_s: float = 0.016) -> dict:
    # normalise 0.8 ms and erasing `erase_s` per batch of 8 images.
    device = {
        "normalize": {"first_call_s": 0.1, "batch_s": [0.0008] * 3},
        "erase": {"first_call_s": 1.5, "batch_s": [erase_s] * 3},
    }
    return {"startup_s": 4.0, "rep_s": rep_s, "cpu_s": 2 * sum(rep_s),
            "images_timed": 48, "device": device}  # fmt: skip


def _timm(rep_s: list[float]) -> dict:
    return {"startup_s": 3.0, "rep_s": rep_s, "cpu_s": sum(rep_s), "images_timed": 48}


def _canned(aug) -> dict:
    section = aug.empty_section(dict(SETTINGS), rounds=2)
    # 1 worker: runs of 2 batches of 8; 2 workers: runs of 4 batches. Every seres child uses
    # 2 CPU seconds per second over 48 timed images, every timm child 1.
    aug.fill_side(section, "seres", 1, 0, _seres([0.16, 0.16, 0.16]))  # 100 img/s
    aug.fill_side(section, "timm", 1, 0, _timm([0.32, 0.32, 0.32]))  # 50 img/s
    aug.fill_side(section, "timm", 1, 1, _timm([0.16, 0.16, 0.16]))  # 100 img/s
    aug.fill_side(section, "seres", 1, 1, _seres([0.32, 0.32, 0.32], erase_s=0.0))  # 50 img/s
    aug.fill_side(section, "seres", 2, 0, _seres([0.16, 0.16, 0.16]))  # 200 img/s
    aug.fill_side(section, "timm", 2, 0, _timm([0.08, 0.08, 0.08]))  # 400 img/s
    aug.fill_side(section, "timm", 2, 1, {"fatal": "timm runner exited with status 1: boom"})
    aug.fill_side(section, "seres", 2, 1, _seres([0.16, 0.16, 0.16]))
    aug.finish_section(section)
    section.update({
        "created": "2026-01-01T00:00:00+00:00", "command": ["bench.py", "--only", "augment"],
        "machine": {"cpu": "cpu", "cores": 2, "loadavg_start": [2.0], "loadavg_end": [3.0]},
        "device_kind": "cpu", "timm_posterize_shim": True,
    })  # fmt: skip
    return section


def test_pooled_rates_device_cost_and_ratios(bench):
    aug = bench[0]
    section = _canned(aug)
    img_s = section["img_s"]
    # Pooled over both rounds: the median of 0.16 x3 and 0.32 x3 is 0.24 s per 16 images.
    assert img_s["seres_host"]["1"] == pytest.approx(16 / 0.24)
    assert img_s["timm"]["1"] == pytest.approx(16 / 0.24)
    assert img_s["seres_host"]["2"] == pytest.approx(200.0)
    assert img_s["timm"]["2"] == pytest.approx(400.0)  # the failed round is left out
    # Device: normalise 0.1 ms/img; erasing the median of 2 ms x9 and 0 ms x3 per image.
    device = section["device"]
    assert device["normalize_ms_per_image"] == pytest.approx(0.1)
    assert device["erase_ms_per_image"] == pytest.approx(2.0)
    assert device["ms_per_image"] == pytest.approx(2.1)
    assert device["first_call_s"] == {"normalize": 0.1, "erase": 1.5}
    combined = 1 / (1 / 200.0 + 0.0021)
    assert img_s["seres"]["2"] == pytest.approx(combined)
    assert section["img_s_per_worker"]["seres"]["2"] == pytest.approx(combined / 2)
    assert section["seres_vs_timm"]["2"] == pytest.approx(combined / 400)
    assert section["host_vs_timm"]["2"] == pytest.approx(0.5)
    rounds = section["seres_vs_timm_rounds"]
    assert rounds["1"] == pytest.approx([1 / (1 / 100 + 0.0021) / 50, 1 / (1 / 50 + 0.0021) / 100])
    assert rounds["2"][1] is None
    assert section["cpu_ms_per_image"]["seres"]["1"] == pytest.approx(2 * 1.44 / 96 * 1e3)
    assert section["cores_busy"]["seres"]["1"] == pytest.approx(2.0)
    assert section["cores_busy"]["timm"]["2"] == pytest.approx(1.0)
    assert section["startup_s"]["timm"]["2"] == [3.0, None]
    assert section["goal_met"] is False
    assert "timm, 2 workers, round 2" in section["errors"]


def test_section_markdown(bench):
    aug = bench[0]
    markdown = aug.augment_markdown({"augment_pipeline": _canned(aug)})
    title = "## Augmented input pipeline (RandAugment + random erasing, 224×224, batch 8, 32"
    assert title in markdown
    assert "(0.10 + 2.00 ms per image on cpu)" in markdown
    combined = 1 / (1 / 200.0 + 0.0021)
    row = (
        f"| 2 | 200 | {combined:.0f} | 400 | {combined / 2:.1f} · 200 | {combined / 400:.2f}× "
        f"| {combined / 400:.2f}×, – | 0.50× | 20.00 · 5.00 | 2.00 · 1.00 | 4.00 · 3.00 |\n"
    )
    assert row in markdown
    assert "- goal: seres (host + device) ÷ timm ≥ 1.00× at every worker count: not met" in markdown
    assert "- timm, 2 workers, round 2: error: timm runner exited with status 1: boom\n" in markdown
    assert "posterize fails on this Pillow (>= 13) for 0 bits" in markdown
    assert aug.augment_markdown({}) == ""


def test_run_alternates_sides_and_skips_timm_without_interpreter(bench, monkeypatch, tmp_path):
    aug = bench[0]
    calls: list[tuple[str, dict]] = []

    def seres_child(spec, env, timeout):
        calls.append(("seres", spec))
        assert env["JAX_PLATFORMS"] == "cpu"
        return {**_seres([0.1] * spec["repeats"]), "versions": {}, "transform": {},
                "device_kind": "cpu"}  # fmt: skip

    def timm_child(python, spec, timeout):
        calls.append(("timm", spec))
        assert python == "/opt/timm/bin/python"
        return {**_timm([0.1] * spec["repeats"]), "versions": {}, "transform": "Compose()",
                "posterize_shim": False}  # fmt: skip

    monkeypatch.setattr(aug, "run_worker", seres_child)
    monkeypatch.setattr(aug, "run_timm", timm_child)
    monkeypatch.setattr(aug, "make_photo_folder", lambda root, train, val, seed: root)
    common = {"quick": True, "repeats": 2, "rounds": 2, "device": "cpu", "seed": 0,
              "timeout": 60.0, "tmp": tmp_path, "log": lambda message: None}  # fmt: skip
    results: dict = {}
    aug.run_augment_pipeline(results, python="/opt/timm/bin/python", **common)
    order = [(side, spec["workers"]) for side, spec in calls]
    assert order == [("seres", 1), ("timm", 1), ("seres", 2), ("timm", 2),
                     ("timm", 1), ("seres", 1), ("timm", 2), ("seres", 2)]  # fmt: skip
    quick = bench[2].AUGMENT_QUICK
    for side, spec in calls:
        workers = spec["workers"]
        assert spec["warmup"] == quick["warmup_per_worker"] * workers
        assert spec["batches"] == quick["batches_per_worker"] * workers
        assert spec["auto_augment"] == "rand-m9-mstd0.5-inc1" and spec["re_mode"] == "pixel"
        assert ("kind" in spec) == (side == "seres")
    # Both sides get the same settings.
    first_seres, first_timm = calls[0][1], calls[1][1]
    assert {k: v for k, v in first_seres.items() if k not in ("kind", "impl")} == first_timm
    section = results["augment_pipeline"]
    assert section["settings"]["rounds"] == 2 and section["goal_met"] is not None
    assert section["machine"]["loadavg_end"] is not None or sys.platform == "win32"

    calls.clear()
    aug.run_augment_pipeline(results, python=None, **common)
    assert {side for side, _ in calls} == {"seres"} and len(calls) == 4
    section = results["augment_pipeline"]
    assert section["skipped"]["timm"] == aug.NOT_MEASURED
    assert section["seres_vs_timm"] == {"1": None, "2": None} and section["goal_met"] is None
    markdown = aug.augment_markdown(results)
    assert "- timm: skipped (timm's side was not measured: no interpreter with timm" in markdown
    assert "| 1 | 160 | " in markdown and "| skipped |" in markdown  # 16 images in 0.1 s


def test_only_augment_selects_and_merges(bench, monkeypatch):
    aug, cli, _, report, _, _ = bench
    args = cli.build_parser().parse_args(["--only", "augment", "--timm-python", "/x/python"])
    assert cli.apply_only(args) == {"augment"}
    assert args.augment_pipeline and args.skip_models and args.skip_pipeline
    assert not args.recipe_overhead and args.augment_rounds == 2
    assert aug.timm_python(args.timm_python) == "/x/python"
    monkeypatch.setenv(aug.TIMM_PYTHON_ENV, "/env/python")
    assert aug.timm_python(None) == "/env/python"
    monkeypatch.delenv(aug.TIMM_PYTHON_ENV)
    assert aug.timm_python(None) is None
    default = cli.build_parser().parse_args([])
    assert "augment" not in cli.apply_only(default)  # opt-in
    assert cli.WORKER_KINDS["augment"] is aug.augment_worker
    old = {"created": "old", "configs": {"tiny": 1}, "eval": {"img_s": 2},
           "augment_pipeline": {"created": "older"}}  # fmt: skip
    new = {"created": "new", "configs": {}, "augment_pipeline": {"created": "new"}}
    merged = report.merge_results(old, new, {"augment"})
    # The section carries its own date; the file's header and other sections stay.
    assert {k: merged[k] for k in old} == {**old, "augment_pipeline": {"created": "new"}}


def test_timm_runner_protocol(bench, tmp_path):
    aug, _, _, _, runner, worker = bench
    # Self-contained: the timm interpreter has no seres.
    tree = ast.parse(Path(runner.__file__).read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import)
            else [node.module or "."] if isinstance(node, ast.ImportFrom) else []
        )
    }  # fmt: skip
    assert not imported & {"seres", "seres_jax", "seres_torch", "seres_cli", "seres_bench", "."}
    assert runner.RESULT_PREFIX == worker.RESULT_PREFIX
    missing = aug.run_timm(str(tmp_path / "no-python"), {}, timeout=10)
    assert missing["fatal"].startswith(f"cannot run {tmp_path / 'no-python'}")
    try:
        import timm  # noqa: F401
    except ImportError:
        # This interpreter has no timm: the runner answers with the import's failure.
        answer = aug.run_timm(sys.executable, {"root": str(tmp_path)}, timeout=30)
        assert answer == {"fatal": "ModuleNotFoundError: No module named 'timm'"}
    cpu = runner.tree_cpu_s()
    if cpu is not None:  # Linux: this process's own CPU time is in the tree's
        assert cpu >= time.process_time() - 0.05


def test_timm_posterize_shim_is_pillow12(bench):
    runner = bench[4]
    from PIL import Image, ImageOps

    img = Image.frombytes("RGB", (4, 2), bytes(range(0, 240, 10)))
    assert runner._posterize_pillow12(img, 8) is img
    assert runner._posterize_pillow12(img, 3).tobytes() == ImageOps.posterize(img, 3).tobytes()
    assert runner._posterize_pillow12(img, 0).tobytes() == bytes(24)
    grey = img.convert("L")
    assert runner._posterize_pillow12(grey, 0).tobytes() == bytes(8)
