"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from .helpers import HAVE_TORCH

if HAVE_TORCH:
    import torch

    import seres_torch as st
    from seres_torch.resnet import create_model

pytestmark = pytest.mark.requires_torch


README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks, "the README has no Python example"
    # The NNX section's loop runs without torch, in test_nnx.py.
    blocks = [block for block in blocks if "from seres_jax import nnx" not in block]
    monkeypatch.chdir(tmp_path)
    torch.save(st.SEResNetTiny().state_dict(), "se_resnet_tiny.pt")
    torch.save(create_model("seresnet50").state_dict(), "seresnet50.pth")
    namespaces = []
    for block in blocks:
        namespaces.append({})
        exec(compile(block, str(README), "exec"), namespaces[-1])
    conversion, loop, zoo = namespaces
    assert list(conversion["torch_state"]) == list(conversion["state_dict"])
    assert int(loop["state"].step) == loop["total"] == 11
    assert float(loop["metrics"]["loss"]) < 2.0 < np.log(10)  # below chance: it learnt
    assert np.isfinite(loop["val"]["loss"]) and 0 <= loop["val"]["acc"] <= 1
    assert zoo["variables"]["params"]["fc"]["kernel"].shape == (2048, 1000)
