"""The README's Python usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import seres_torch as st

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    torch.save(st.SEResNetTiny().state_dict(), "se_resnet_tiny.pt")
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)
    assert list(namespace["torch_state"]) == list(namespace["state_dict"])
