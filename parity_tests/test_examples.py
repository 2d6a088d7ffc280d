"""Every script in examples/ runs to completion, so none of them rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
# Arguments that keep each example small enough for the default suite.
SMOKE_ARGS: dict[str, list[str]] = {"finetune_timm_seresnet50.py": ["--small", "--epochs", "1"]}


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize(
    "script",
    # An example that imports torch needs it; the rest run on a torch-free install too.
    [
        pytest.param(p, marks=pytest.mark.requires_torch) if "import torch" in p.read_text() else p
        for p in EXAMPLES
    ],
    ids=lambda p: p.name,
)
def test_example_runs(script, tmp_path):
    env = {**os.environ, "SERES_EXAMPLE_SMOKE": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), *SMOKE_ARGS.get(script.name, []), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
