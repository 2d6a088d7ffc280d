"""The fine-tuning loop of a timm model, end to end through the command line: a hub cache on disk
(``huggingface_hub``'s own layout, offline) holding a checkpoint timm itself trained and saved
with ``save_for_hf`` (``fixtures/record_timm_hub.py``: a reduced ``seresnet18``, 6 photo
classes) -> ``seres train --initial-checkpoint hf-hub:... --num-classes 3 --export-dir`` on a
3-class folder of real photographs -> the export's ``config.json`` and tensors as timm's
``save_for_hf`` writes them (``fixtures/record_timm_export.py``) -> ``seres eval`` of the export
gives the run's last evaluation. Slow: the fine-tuned run against the same run from scratch,
and the kept 6-class head evaluated before any update, as ``seres eval`` of the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from parity_tests.hub_cache import hub_env, make_hub_cache
from parity_tests.photos import make_image_folder
from seres_cli.main import main
from seres_jax.train import read_metrics

FIXTURES = Path(__file__).parent / "fixtures"
SOURCE = FIXTURES / "timm_hub" / "seresnet18_photos"
REPO = "timm/seresnet18_photos"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    files = {name: SOURCE / name for name in ("config.json", "model.safetensors")}
    make_hub_cache(tmp_path / "hub", REPO, files)
    hub_env(monkeypatch, tmp_path / "hub")
    return f"hf-hub:{REPO}"


def _train(folder: Path, workdir: Path, *extra: str) -> list[dict]:
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(folder), "--epochs", "2",
            "--batch-size", "8", "--workdir", str(workdir), "--no-progress", *extra]  # fmt: skip
    assert main(argv) == 0
    return read_metrics(workdir)


def _tensors(path: Path) -> dict[str, tuple[list[int], str]]:
    with safe_open(str(path), framework="numpy") as f:
        return {k: (list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118


def test_hub_checkpoint_fine_tuned_exported_as_timm_and_evaluated(hub, tmp_path, capsys):
    folder = make_image_folder(tmp_path / "photos", classes=3, per_class=8, val_per_class=4)
    out = tmp_path / "export"
    records = _train(folder, tmp_path / "run", "--initial-checkpoint", hub, "--num-classes", "3",
                     "--export-dir", str(out))  # fmt: skip
    printed = capsys.readouterr().out
    assert f"initial weights: {hub}" in printed
    assert "classifier fc.weight, fc.bias re-initialised" in printed
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    # The architecture and the preprocessing are the weights' (their config.json: 32 px).
    assert run["arch"] == "seresnet18:in_chans=3,num_classes=3,channels=8-16-32-64"
    assert run["initial"]["source"] == hub and run["initial"]["reinitialised"] == [
        "fc.weight", "fc.bias"]  # fmt: skip
    assert run["initial"]["eval"]["step"] == 0
    assert run["data"]["train"]["input_size"] == 32  # recorded for runs started from this one

    # The export is what timm's save_for_hf writes for this network (recorded for the same
    # reduced seresnet18, one block a stage) and holds timm's tensors (the source's, the head
    # resized).
    ours = json.loads((out / "config.json").read_text())
    timms = json.loads((FIXTURES / "timm_export" / "seresnet18_run" / "config.json").read_text())
    del timms["model_args"]["layers"]  # the recorded run's; this one keeps timm's (2, 2, 2, 2)
    assert ours == timms
    exported, source = _tensors(out / "model.safetensors"), _tensors(SOURCE / "model.safetensors")
    assert exported.keys() == source.keys()
    resized = {k for k in source if exported[k] != source[k]}
    assert resized == {"fc.weight", "fc.bias"}
    card = (out / "README.md").read_text()
    assert f"--initial-checkpoint {hub} --num-classes 3 --dataset imagefolder" in card
    assert "--decay-milestones" not in card  # only what differs from the defaults

    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["eval", str(out), "--dataset", "imagefolder", "--data-dir", str(folder),
                 "--json", str(report), "--no-progress"]) == 0  # fmt: skip
    result = json.loads(report.read_text())["jax"]
    last = records[-1]
    assert result["count"] == 12
    assert result["acc"] == pytest.approx(last["val_acc"])
    assert result["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    # The run itself, as it validated: at its weights' recorded 32 px, not at the
    # architecture's pretrained size.
    assert main(["eval", str(tmp_path / "run"), "--json", str(report), "--force",
                 "--no-progress"]) == 0  # fmt: skip
    result = json.loads(report.read_text())["jax"]
    assert result["acc"] == pytest.approx(last["val_acc"])
    assert result["loss"] == pytest.approx(last["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_fine_tuning_starts_from_the_source_and_beats_scratch(hub, tmp_path, capsys):
    """The kept head: the evaluation before any update equals ``seres eval`` of the hub
    source on the same 6 classes. A new 3-class head on the pretrained features beats the same
    run from scratch after the same steps (both curves printed)."""
    six = make_image_folder(tmp_path / "six", classes=6, per_class=4, val_per_class=2)
    _train(six, tmp_path / "kept", "--initial-checkpoint", hub, "--max-steps", "1")
    initial = json.loads((tmp_path / "kept" / "config.json").read_text())["initial"]
    assert initial["reinitialised"] == []
    report = tmp_path / "source.json"
    assert main(["eval", hub, "--dataset", "imagefolder", "--data-dir", str(six),
                 "--json", str(report), "--no-progress"]) == 0  # fmt: skip
    source = json.loads(report.read_text())["jax"]
    assert initial["eval"]["val_acc"] == pytest.approx(source["acc"])
    assert initial["eval"]["val_loss"] == pytest.approx(source["loss"], rel=1e-5)

    three = make_image_folder(tmp_path / "three", classes=3, per_class=8, val_per_class=4)
    tuned = _train(three, tmp_path / "tuned", "--initial-checkpoint", hub)
    scratch = _train(three, tmp_path / "scratch", "--model",
                     "seresnet18:channels=8-16-32-64", "--image-size", "32")  # fmt: skip
    with capsys.disabled():
        for name, curve in (("fine-tuned", tuned), ("scratch", scratch)):
            print(name, [(r["epoch"], round(r["val_loss"], 4), r["val_acc"]) for r in curve])
    assert tuned[-1]["val_loss"] < scratch[-1]["val_loss"]
    assert tuned[-1]["val_acc"] >= scratch[-1]["val_acc"]
