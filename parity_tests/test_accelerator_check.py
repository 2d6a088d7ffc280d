"""``benchmarks/accelerator_check.py --cpu-smoke``: every stage of the accelerator check at toy
sizes on the CPU, so the script cannot rot between the rare runs on a GPU or TPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator_check.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("JAX_PLATFORMS", None)
    return env


@pytest.mark.requires_torch
def test_cpu_smoke_runs_every_stage(tmp_path):
    out = tmp_path / "out"
    # Budgets tripled: the CI machine may be busy, and a stage cut short would fail this test.
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--cpu-smoke", "--budget-scale", "3"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "accelerator_check.json").read_text())
    markdown = (out / "accelerator_check.md").read_text()
    assert markdown in proc.stdout
    stages = results["stages"]
    assert list(stages) == ["environment", "parity", "speed", "training"]
    for name, stage in stages.items():
        assert stage["status"] in ("done", "skipped"), (name, stage, proc.stderr[-3000:])
        if stage["status"] == "skipped":
            assert stage["reason"]
        assert f"| {name} | {stage['status']} |" in markdown
    parity = stages["parity"]
    assert (out / parity["pass1"]["log"]).is_file()
    assert parity["pass1"]["outcomes"].get("passed", 0) >= 1 and not parity["pass1"]["failed"]
    assert parity["pass1"]["worst"]  # the worst errors, as the suite prints them
    speed = stages["speed"]["configs"]["toy_b16"]["impls"]
    assert speed["jax"]["train_img_s"] > 0 and speed["jax"]["train_mfu"] is not None
    training = stages["training"]
    if training["status"] == "done":
        assert training["loss_went_down"] and training["resumed_matches"]
        assert (
            training["resume"]["epochs"][-1]["step"] == training["straight"]["epochs"][-1]["step"]
        )


def test_speed_worker_imports_the_train_step_without_the_input_pipeline_packages():
    """On a machine without grain, array_record or PIL, the speed stage's JAX worker still
    imports ``seres_jax.train`` (for its training step) through inert stand-ins."""
    code = (
        "import accelerator_check as a; stubbed = a.install_stubs(a.TRAIN_PACKAGES, force=True);"
        "import seres_jax.train as t, grain.python;"
        "assert callable(t.train_step) and stubbed == list(a.TRAIN_PACKAGES), stubbed"
    )
    env = _env()
    env["PYTHONPATH"] += os.pathsep + str(SCRIPT.parent)
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
