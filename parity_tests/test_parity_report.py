"""The layer-by-layer parity report and ``seres parity``: a clean checkpoint passes, a planted
fault is located at exactly the layer that holds it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import seres_jax as sj
from seres_cli.main import main
from seres_jax.convert import torch_to_flax
from seres_jax.data import load_digits, splits_from_arrays, train_dataset
from seres_jax.formats import save_variables
from seres_jax.parity import parity_report, randomize_batchnorm

from .helpers import HAVE_TORCH
from .notebook import run_notebook

if HAVE_TORCH:
    import torch
    import torch.nn.functional as F

pytestmark = pytest.mark.requires_torch

KW = dict(in_ch=1, num_classes=10, base=8, n=1, reduction=4)
ARCH = "seresnet_tiny:in_ch=1,base=8,n=1,reduction=4"


@pytest.fixture(scope="module")
def notebook_checkpoint(tmp_path_factory):
    """A checkpoint trained for a few SGD steps with the notebook's own SEResNetTiny."""
    torch.manual_seed(0)
    model = run_notebook().namespace["SEResNetTiny"](**KW).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = train_dataset(splits_from_arrays(load_digits()), 64, seed=0)
    for x, y in (batches[i] for i in range(5)):
        opt.zero_grad()
        F.cross_entropy(
            model(torch.from_numpy(x.transpose(0, 3, 1, 2))), torch.from_numpy(y).long()
        ).backward()
        opt.step()
    path = tmp_path_factory.mktemp("nb") / "notebook_trained.pt"
    torch.save(model.state_dict(), path)
    return path, model


def _planted(model):
    variables = torch_to_flax(model.state_dict())
    bn = variables["batch_stats"]["stage2_0"]["conv1"]["bn"]
    bn["mean"] = bn["mean"] + 0.5
    return variables


def test_report_names_the_layer_holding_a_planted_fault(notebook_checkpoint):
    _, model = notebook_checkpoint
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    flax_model = sj.SEResNetTiny(**KW)
    clean = parity_report(model, flax_model, x)
    assert clean.ok, clean.format()
    faulty = parity_report(model, flax_model, x, variables=_planted(model))
    assert not faulty.ok
    eval_mode = faulty.modes[0]
    first = eval_mode.first_divergence(faulty.tolerance)
    assert (first.name, first.kind) == ("stage2.0.conv1.bn", "BatchNorm2d")
    # Every layer before it in execution order is clean.
    index = eval_mode.rows.index(first)
    assert all(r.max_rel <= faulty.tolerance.output for r in eval_mode.rows[:index])
    # In train mode the running mean only enters the running-statistics update.
    train_mode = faulty.modes[1]
    assert train_mode.first_divergence(faulty.tolerance) is None
    assert train_mode.result.running_stats["stage2.0.conv1.bn.running_mean"] > 1e-2


def test_seres_parity_on_a_notebook_checkpoint_passes(notebook_checkpoint, tmp_path, capsys):
    path, _ = notebook_checkpoint
    report_path = tmp_path / "report.json"
    code = main(["parity", str(path), "--arch", ARCH, "--image-size", "8", "--json",
                 str(report_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stage1.0.conv1.bn" in out and "BatchNorm2d" in out and "parity holds" in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert set(report["modes"]) == {"eval", "train"}
    layers = [row["name"] for row in report["modes"]["eval"]["layers"]]
    assert layers[:3] == ["stem.0", "stem.1", "stage1.0.conv1.conv"]
    assert layers[-1] == ""  # the model output


def test_seres_parity_names_the_planted_fault_and_fails(notebook_checkpoint, tmp_path, capsys):
    path, model = notebook_checkpoint
    faulty = tmp_path / "converted_with_fault.msgpack"
    save_variables(_planted(model), faulty)
    report_path = tmp_path / "report.json"
    code = main(["parity", str(path), "--arch", ARCH, "--against", str(faulty), "--image-size",
                 "8", "--json", str(report_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "first divergence: stage2.0.conv1.bn (BatchNorm2d)" in out
    assert "PARITY FAILS" in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert report["modes"]["eval"]["first_divergence"] == "stage2.0.conv1.bn"


def test_seres_parity_without_checkpoint_uses_seeded_random_weights(capsys):
    assert main(["parity", "--arch", ARCH, "--image-size", "8"]) == 0
    assert "parity holds" in capsys.readouterr().out


def test_random_weights_have_non_trivial_batchnorm():
    model = randomize_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), seed=1)
    bn = model[0]
    assert not torch.allclose(bn.running_var, torch.ones(4))
    assert not torch.allclose(bn.weight, torch.ones(4))
