"""``seres export --format timm`` (``seres_jax.export``) against what timm itself writes: the
``config.json`` of timm's ``save_for_hf`` byte for byte (seven networks: reduced, default, a
weight tag named, ImageNet-12k weights with a 1000-class head, changed stem and attention, one
input channel; the ``pretrained_cfg`` of every weight tag of the zoo), the ``state_dict``'s and
``model.safetensors``' keys, shapes and dtypes, ``generate_readme``'s card; the weights back bit
for bit; a work directory exported (its classes, preprocessing, metrics and the command that
trains it again, which ``seres train --print-config`` turns back into its config); every
refusal as one error line with nothing written, ``--force`` touching the three files only, a
failed write leaving nothing.

Slow: a real ``seres train`` run (one epoch, with an EMA) exported: its EMA bit for bit, timm's
config for it byte for byte; and, where timm can be run (here, or ``$SERES_TIMM_PYTHON``), timm
loading the export (``fixtures/check_timm_loads_export.py``) and agreeing with seres on the
run's validation images.

timm's side is recorded by ``fixtures/record_timm_export.py`` (``fixtures/timm_export/``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import yaml
from flax.traverse_util import flatten_dict

from parity_tests.helpers import one_error_line, run_record, snapshot
from parity_tests.photos import CLASS_NAMES, make_image_folder
from seres_cli.export import train_command
from seres_cli.main import main
from seres_jax.data import DataConfig, decode_rgb, eval_crop, normalize
from seres_jax.export import (
    ExportError,
    build_card,
    class_names,
    export_timm,
    export_trained,
    generate_readme,
    run_data_configs,
    timm_config,
    timm_model_args,
    timm_pretrained_cfg,
)
from seres_jax.formats import CheckpointError, load_checkpoint
from seres_jax.registry import build_flax, variables_template
from seres_jax.train import TrainConfig, read_metrics

FIXTURES = Path(__file__).parent / "fixtures"
RECORD = FIXTURES / "timm_export"
CHECK_SCRIPT = FIXTURES / "check_timm_loads_export.py"
TIMM_PYTHON_ENV = "SERES_TIMM_PYTHON"  # a Python with timm, for the live check
MODEL = "seresnet18:channels=8-16-32-64,layers=1-1-1-1"
ARCH = f"{MODEL},num_classes=3"
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

# Each recorded case as seres names it: (architecture, data config, validation config).
CASES: dict[str, tuple[str, DataConfig, DataConfig | None]] = {
    "seresnet18_run": (ARCH, DataConfig(32, 0.875, "bicubic"), None),
    "seresnet18_custom": (
        ARCH,
        DataConfig(48, 1.0, "bilinear", (0.5,) * 3, (0.25,) * 3),
        DataConfig(64, 0.9, "bilinear", (0.5,) * 3, (0.25,) * 3),
    ),
    "seresnet50": ("seresnet50", DataConfig(224, 0.95), DataConfig(288, 1.0)),
    "seresnet18_variant": (
        "seresnet18:layers=1-1-1-1,stem_width=16,stem_type=deep,channels=8-16-32-64,attn=eca,"
        "drop_path_rate=0.1",
        DataConfig(224, 0.875),
        DataConfig(288, 0.95),
    ),
    "legacy_seresnet18_grey": (
        "legacy_seresnet18:in_chans=1,num_classes=5",
        DataConfig(64, 0.9),
        DataConfig(80, 0.9),
    ),
    "seresnet50_ra2_10": (
        "seresnet50.ra2_in1k:num_classes=10",
        DataConfig(160, 0.9, "bilinear"),
        None,
    ),
    "seresnextaa101d_in12k_1000": (
        "seresnextaa101d_32x8d.sw_in12k:num_classes=1000",
        DataConfig(224, 0.95),
        DataConfig(288, 1.0),
    ),
}


def _record() -> dict[str, Any]:
    return json.loads((RECORD / "record.json").read_text(encoding="utf-8"))


def _random_variables(arch: str, seed: int = 0) -> Any:
    """``arch``'s variables filled with seeded random values (no initialisation compiled)."""
    rng = np.random.default_rng(seed)

    def fill(spec: Any) -> np.ndarray:
        if np.issubdtype(spec.dtype, np.integer):
            return rng.integers(0, 1000, spec.shape).astype(spec.dtype)
        return rng.standard_normal(spec.shape).astype(spec.dtype)

    return jax.tree.map(fill, variables_template(arch))


def _safetensors_keys(path: Path) -> list[list[Any]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return [[k, list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()]
                for k in f.keys()]  # fmt: skip  # noqa: SIM118


def _front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert isinstance(front, dict)
    return front


def _assert_same(a: Any, b: Any) -> None:
    """Two variables trees equal bit for bit, dtype for dtype."""
    fa, fb = flatten_dict(jax.device_get(a)), flatten_dict(jax.device_get(b))
    assert fa.keys() == fb.keys()
    for key in fa:
        x, y = np.asarray(fa[key]), np.asarray(fb[key])
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), key


# --------------------------------------------------------------------------- against timm's files


def test_pretrained_cfg_of_every_weight_tag_is_timms():
    recorded = _record()["pretrained_cfgs"]
    assert len(recorded) == 51
    for key, cfg in recorded.items():
        name, tag = key.split(".", 1)
        # json.dumps: the same keys in the same order with the same values and types.
        assert json.dumps(timm_pretrained_cfg(name, tag)) == json.dumps(cfg), key


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_json_is_timms_byte_for_byte(case):
    arch, data, val = CASES[case]
    labels = _record()["cases"][case]["label_names"]
    ours = json.dumps(timm_config(arch, data, val, labels), indent=2)
    assert ours == (RECORD / case / "config.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("case", sorted(c for c in CASES if (RECORD / c / "keys.json").exists()))
def test_state_dict_is_timms(case):
    from seres_jax.convert import flax_to_state_dict

    arch = CASES[case][0]
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables_template(arch))
    ours = {k: [list(v.shape), v.dtype.name] for k, v in flax_to_state_dict(zeros).items()}
    recorded = json.loads((RECORD / case / "keys.json").read_text())["state_dict"]
    assert ours == {key: [shape, dtype] for key, shape, dtype in recorded}


def test_readme_is_timms_generate_readme():
    for entry in _record()["readmes"]:
        assert generate_readme(entry["card"], entry["name"]) == entry["text"]


def test_what_a_config_json_cannot_express_is_refused():
    cases = {
        "seresnet50:aa_layer=avg": "aa_layer=avg",
        "seresnet50:block=basic": "block=basic",
        "legacy_seresnet18:channels=8-16-32-64": "channels=8-16-32-64",
        "seresnet_tiny": "timm has no seresnet_tiny",
    }
    for arch, said in cases.items():
        with pytest.raises(ExportError, match=said):
            timm_model_args(arch)
    with pytest.raises(ExportError, match="2 label names for the 3 classes"):
        timm_config(ARCH, DataConfig(32), None, ["a", "b"])
    # timm's names: a SENet's cardinality is its groups; rates are left out.
    assert timm_model_args("legacy_seresnet18:cardinality=2,drop_rate=0.1") == {"groups": 2}


# --------------------------------------------------------------------------- writing


def test_export_writes_timms_files_and_the_weights_round_trip(tmp_path):
    variables = _random_variables(ARCH)
    data = DataConfig(32, 0.875, "bicubic")
    out = export_timm(variables, ARCH, tmp_path / "a" / "b" / "model", data_config=data,
                      label_names=list(CLASS_NAMES[:3]))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors"]  # fmt: skip
    timm_config_json = (RECORD / "seresnet18_run" / "config.json").read_text()
    assert (out / "config.json").read_text() == timm_config_json
    timm_keys = json.loads((RECORD / "seresnet18_run" / "keys.json").read_text())["keys"]
    assert _safetensors_keys(out / "model.safetensors") == timm_keys
    # Bit for bit back, through seres' strict reader.
    back = load_checkpoint(out / "model.safetensors", template=variables_template(ARCH))
    _assert_same(back.to_variables(variables_template(ARCH)), variables)
    front = _front_matter((out / "README.md").read_text())
    assert front["tags"] == ["image-classification", "timm"]
    assert (front["library_name"], front["license"]) == ("timm", "apache-2.0")


def test_an_existing_directory_needs_force_and_keeps_the_users_files(tmp_path):
    variables, data = _random_variables(ARCH), DataConfig(32)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "README.md").write_text("old card")
    before = snapshot(tmp_path)
    with pytest.raises(ExportError, match="exists; pass --force"):
        export_timm(variables, ARCH, out, data_config=data)
    assert snapshot(tmp_path) == before
    export_timm(variables, ARCH, out, data_config=data, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "README.md").read_text().startswith("---\ntags:")
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "README.md", "config.json", "model.safetensors", "notes.txt", "out"]  # fmt: skip
    # A file of one of the three names that is a directory is refused, before anything.
    (out / "README.md").unlink()
    (out / "README.md").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="is a directory"):
        export_timm(variables, ARCH, out, data_config=data, force=True)
    assert snapshot(tmp_path) == before


def test_a_failed_write_leaves_nothing_new_and_nothing_changed(tmp_path, monkeypatch):
    import seres_jax.export as export

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "save_state_dict", fail)
    variables, data = _random_variables(ARCH), DataConfig(32)
    with pytest.raises(CheckpointError, match="No space left"):
        export_timm(variables, ARCH, tmp_path / "new" / "deeper" / "out", data_config=data)
    assert list(tmp_path.iterdir()) == []  # no directory of ours left, parents included
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="No space left"):
        export_timm(variables, ARCH, out, data_config=data, force=True)
    assert snapshot(tmp_path) == before


def test_weights_of_another_architecture_are_refused(tmp_path):
    from seres_jax.convert import ConversionError

    with pytest.raises(ConversionError):
        export_timm(_random_variables("seresnet18:channels=8-16-32-64"), ARCH, tmp_path / "o",
                    data_config=DataConfig(32))  # fmt: skip
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def laid_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run/``, a work directory as ``seres train`` lays one out (``config.json``, an orbax
    checkpoint, ``metrics.jsonl``) for the reduced seresnet18 on the 3-class photo folder at 32
    pixels, with random weights (nothing trained: the real run is the slow tests'), and
    ``model.safetensors``, a checkpoint file of the same weights."""
    from seres_jax.formats import save_state_dict, save_variables

    root = tmp_path_factory.mktemp("laid_out")
    folder = make_image_folder(root / "photos", classes=3, per_class=1, val_per_class=1)
    run = root / "run"
    run.mkdir()
    config = TrainConfig(model=MODEL, dataset="imagefolder", data_dir=str(folder), epochs=1,
                         batch_size=8, image_size=32)  # fmt: skip
    (run / "config.json").write_text(json.dumps(run_record(config, ARCH), indent=2))
    epoch = {"kind": "epoch", "epoch": 0, "step": 1, "train_loss": 1.1, "train_acc": 0.5,
             "val_loss": 1.25, "val_acc": 2 / 3, "val_acc5": 1.0}  # fmt: skip
    (run / "metrics.jsonl").write_text(json.dumps(epoch) + "\n")
    variables = _random_variables(ARCH)
    save_variables(variables, run / "checkpoints")
    from seres_jax.convert import flax_to_state_dict

    save_state_dict(flax_to_state_dict(variables), root / "model.safetensors")
    return root


def test_a_run_exports_as_timm_writes_it(laid_out, tmp_path, capsys):
    run, out = laid_out / "run", tmp_path / "seresnet18-photos"
    assert main(["export", str(run), str(out), "--format", "timm"]) == 0
    said = capsys.readouterr().out
    assert "the trained weights, 96 tensors" in said and "local-dir:" in said
    # The run is the recorded case: timm's config.json for it, byte for byte, classes included
    # (from the photo folder), the preprocessing the run trained with.
    timm_config_json = (RECORD / "seresnet18_run" / "config.json").read_text()
    assert (out / "config.json").read_text() == timm_config_json
    template = variables_template(ARCH)
    back = load_checkpoint(out / "model.safetensors", template=template).to_variables(template)
    saved = load_checkpoint(run / "checkpoints", template=template).to_variables(template)
    _assert_same(back, saved)
    text = (out / "README.md").read_text()
    assert _front_matter(text)["tags"] == ["image-classification", "timm"]
    for line in ("# Model card for seresnet18-photos", "  - val top-1: 66.67 %",
                 "  - val top-5: 100.00 %", "  - val loss: 1.2500", "- **Weights:** the trained "
                 "weights", "- **Classes:** 3: c0_pagoda, c1_flower, c2_sky"):  # fmt: skip
        assert line in text.splitlines(), line
    # The card's command makes the run's very config (seres train --print-config reads nothing).
    command = next(line for line in text.splitlines() if line.startswith("seres train "))
    stored = json.loads((run / "config.json").read_text())["config"]
    assert _printed_config(shlex.split(command)[1:]) == stored


def _printed_config(argv: list[str]) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--print-config"]) == 0
    config: dict[str, Any] = json.loads(out.getvalue())["config"]
    return config


def test_train_command_gives_back_a_recipe_full_of_flags():
    # timm's RSB A1 recipe with changes, every kind of flag: store_true/false, --no-X, pairs,
    # lists, lr given beside lr_base.
    argv = ["train", "--recipe", "rsb-a1", "--dataset", "imagefolder", "--data-dir", "/d",
            "--no-nesterov", "--no-augment", "--opt-betas", "0.8", "0.99", "--scale", "0.5", "1",
            "--lr-base", "0.2", "--val-crop-pct", "0.9", "--sched", "multistep",
            "--decay-milestones", "3", "6"]  # fmt: skip
    for args in (argv, ["train"], ["train", "--lr-base", "0.3", "--dataset", "cifar10"]):
        recorded = _printed_config(args)
        assert _printed_config(shlex.split(train_command(recorded))[1:]) == recorded


def test_a_checkpoint_file_exports_with_its_architecture(laid_out, tmp_path, capsys):
    src = laid_out / "model.safetensors"
    out = tmp_path / "again"
    assert main(["export", str(src), str(out), "--arch", ARCH]) == 0
    captured = capsys.readouterr()
    assert "label_names left out" in captured.err
    config = json.loads((out / "config.json").read_text())
    # Outside a run: the preprocessing of the weights the architecture names (seresnet18's).
    assert config["pretrained_cfg"]["input_size"] == [3, 224, 224]
    assert config["pretrained_cfg"]["test_input_size"] == [3, 288, 288]
    assert "label_names" not in config
    template = variables_template(ARCH)
    _assert_same(load_checkpoint(out / "model.safetensors", template=template).data,
                 load_checkpoint(src, template=template).data)  # fmt: skip


def test_refusals_are_one_error_line_and_write_nothing(laid_out, tmp_path, capsys):
    run, src = laid_out / "run", laid_out / "model.safetensors"
    # A user's directory, a run with an unreadable config.json, one without checkpoints.
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run, corrupt)
    (corrupt / "config.json").write_text("{not json")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run / "config.json", empty / "config.json")
    (tmp_path / "a_file").write_text("x")
    cases = {
        "exists; pass --force": [str(run), str(user)],
        "no such file or directory": [str(tmp_path / "missing"), str(tmp_path / "o1")],
        "not a run description of seres": [str(corrupt), str(tmp_path / "o2")],
        "invalid choice: 'onnx'": [str(run), str(tmp_path / "o3"), "--format", "onnx"],
        "--arch is needed": [str(src), str(tmp_path / "o4")],
        "holds the source": [str(run), str(run), "--force"],
        "lies in the source": [str(run), str(run / "checkpoints" / "x")],
        "is or lies in the source": [str(src), str(src), "--arch", ARCH],
        "exists and is not a directory": [str(run), str(tmp_path / "a_file")],
        "not an orbax checkpoint": [str(empty), str(tmp_path / "o5")],
        "timm has no seresnet_tiny": [str(src), str(tmp_path / "o6"), "--arch", "seresnet_tiny"],
    }  # fmt: skip
    before, run_before = snapshot(tmp_path), snapshot(laid_out)
    for said, argv in cases.items():
        line = one_error_line(capsys, main(["export", *argv]))
        assert said in line, (said, line)
    assert snapshot(tmp_path) == before and snapshot(laid_out) == run_before


def test_force_replaces_the_three_files_only(laid_out, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "config.json").write_text("{}")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(laid_out / "run"), str(out), "--force", "--name", "photos"]) == 0
    assert (out / "keep.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["architecture"] == "seresnet18"
    assert "# Model card for photos\n" in (out / "README.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "keep.txt",
                                                     "model.safetensors"]  # fmt: skip


def test_a_card_without_a_run_says_what_it_knows():
    card = build_card("seresnet50", _random_variables("seresnet50"), DataConfig(224, 0.95),
                      DataConfig(288, 1.0), name="r50")  # fmt: skip
    text = card.render()
    assert "Image size: train = 224 x 224, test = 288 x 288" in text
    assert "Params (M): 28.088" in text  # timm's seresnet50: 28,088,024 parameters
    assert "Results" not in text and "seres train" not in text


def test_export_trained_takes_the_run_in_hand(tmp_path):
    # What `seres train` holds at its end: the config, the weights, the epochs, the classes.
    config = TrainConfig(model=MODEL, dataset="imagefolder", image_size=32, epochs=2)
    history = [{"epoch": 1, "step": 6, "val_loss": 0.5, "val_acc": 0.75, "val_acc5": 1.0}]
    report = export_trained(_random_variables(ARCH), ARCH, config, tmp_path / "o",
                            history=history, label_names=["a", "b", "c"])  # fmt: skip
    assert (report.weights, report.label_names, report.notes) == ("trained", ["a", "b", "c"], ())
    text = (tmp_path / "o" / "README.md").read_text()
    assert "val top-1: 75.00 %" in text and "epochs: 2" in text and "Trained with" not in text
    config_json = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config_json["label_names"] == ["a", "b", "c"]
    # Classes that do not number the model's are left out, saying why.
    report = export_trained(_random_variables(ARCH), ARCH, config, tmp_path / "p",
                            label_names=["a", "b"])  # fmt: skip
    assert report.label_names is None and "2 classes" in report.notes[0]
    # A run on arrays of its own has no preprocessing timm could apply.
    digits = TrainConfig(model=MODEL, dataset="digits")
    with pytest.raises(ExportError, match="a digits run cannot be exported"):
        export_trained(_random_variables(ARCH), ARCH, digits, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_cifar10_runs_and_where_class_names_come_from(tmp_path):
    from seres_jax.data import CIFAR10_MEAN, CIFAR10_STD

    # CIFAR-10's arrays are 32 pixels, normalised, neither resized nor cropped.
    data, val = run_data_configs(TrainConfig(model=MODEL, dataset="cifar10", image_size=64))
    assert (data.input_size, data.crop_pct, data.mean, data.std, val) == (
        32, 1.0, CIFAR10_MEAN, CIFAR10_STD, None)  # fmt: skip
    meta = tmp_path / "cifar-10-batches-bin" / "batches.meta.txt"
    meta.parent.mkdir()
    meta.write_text("airplane\nautomobile\nbird\n\n")
    assert class_names("cifar10", str(tmp_path)) == (["airplane", "automobile", "bird"], None)
    folder = make_image_folder(tmp_path / "photos", classes=2, per_class=1, val_per_class=1)
    assert class_names("imagefolder", str(folder)) == (list(CLASS_NAMES[:2]), None)
    names, why = class_names("imagefolder", str(tmp_path / "gone"))
    assert names is None and "gone/train" in str(why)
    assert class_names("imagefolder", None) == (
        None,
        "the imagefolder run records no data directory",
    )


# --------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch ``seres train`` run with an EMA of the reduced seresnet18 on the 3-class photo
    folder at 32 pixels: its work directory (``photos`` beside it)."""
    root = tmp_path_factory.mktemp("export_run")
    folder = make_image_folder(root / "photos", classes=3, per_class=8, val_per_class=4)
    workdir = root / "run"
    argv = ["train", "--model", MODEL, "--dataset", "imagefolder", "--data-dir", str(folder),
            "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--model-ema",
            "--workdir", str(workdir), "--no-progress"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return workdir


@pytest.fixture(scope="module")
def exported(trained: Path) -> Path:
    out = trained.parent / "seresnet18-photos"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(trained), str(out), "--format", "timm"]) == 0
    return out


def _saved_state(workdir: Path) -> dict[str, Any]:
    """The training state of the run's last checkpoint, restored by orbax without a template."""
    import orbax.checkpoint as ocp

    step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    with warnings.catch_warnings(), ocp.PyTreeCheckpointer() as checkpointer:
        warnings.simplefilter("ignore", UserWarning)  # no sharding given: the saved one, 1 CPU
        state = checkpointer.restore((workdir / "checkpoints" / str(step) / "default").absolute())
    return jax.tree.map(np.asarray, state)


@pytest.mark.slow
def test_a_trained_run_exports_its_ema_as_timm_writes_it(trained, exported):
    # timm's config.json for the run, byte for byte, classes included.
    timm_config_json = (RECORD / "seresnet18_run" / "config.json").read_text()
    assert (exported / "config.json").read_text() == timm_config_json
    timm_keys = json.loads((RECORD / "seresnet18_run" / "keys.json").read_text())["keys"]
    assert _safetensors_keys(exported / "model.safetensors") == timm_keys
    # The run's EMA, bit for bit, as orbax itself restores the saved state; not its weights.
    template = variables_template(ARCH)
    variables = load_checkpoint(exported / "model.safetensors", template=template)
    state = _saved_state(trained)
    _assert_same(variables.to_variables(template), state["ema"])
    assert not np.array_equal(
        state["params"]["fc"]["kernel"], state["ema"]["params"]["fc"]["kernel"]
    )
    text = (exported / "README.md").read_text()
    last = read_metrics(trained)[-1]
    for key in ("val_acc", "val_acc5", "ema_val_acc", "ema_val_acc5"):
        assert f"{last[key] * 100:.2f} %" in text
    assert f"EMA val loss: {last['ema_val_loss']:.4f}" in text
    assert "the EMA of the trained weights" in text
    command = next(line for line in text.splitlines() if line.startswith("seres train "))
    stored = json.loads((trained / "config.json").read_text())["config"]
    assert _printed_config(shlex.split(command)[1:]) == stored


def _val_images(trained: Path) -> tuple[list[Path], np.ndarray]:
    """The run's validation files in label order, and their labels."""
    val = trained.parent / "photos" / "val"
    files = sorted(val.glob("*/*"))
    labels = np.array([CLASS_NAMES.index(f.parent.name) for f in files])
    return files, labels


def _seres_logits(arch: str, variables: Any, files: list[Path], data: DataConfig) -> np.ndarray:
    """seres' eval transform and model on ``files`` (op by op: nothing compiled anew)."""
    pixels = np.stack([eval_crop(decode_rgb(f.read_bytes(), f.name), data.input_size,
                                 data.crop_pct, data.interpolation) for f in files])  # fmt: skip
    images = normalize(pixels, data.mean, data.std)
    return np.asarray(build_flax(arch).apply(variables, images), np.float64)


# --------------------------------------------------------------------------- timm itself


def _timm_python() -> str | None:
    if importlib.util.find_spec("timm") is not None:
        return sys.executable
    return os.environ.get(TIMM_PYTHON_ENV)


@pytest.mark.slow
@pytest.mark.skipif(_timm_python() is None, reason=f"needs timm here or ${TIMM_PYTHON_ENV}")
def test_timm_loads_the_export_and_agrees_with_seres(trained, exported):
    files, _ = _val_images(trained)
    python = _timm_python()
    assert python is not None
    result = subprocess.run([python, str(CHECK_SCRIPT), str(exported), *map(str, files)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    timm = json.loads(result.stdout)
    assert timm["label_names"] == list(CLASS_NAMES[:3])
    assert timm["data_config"] == {"input_size": [3, 32, 32], "interpolation": "bicubic",
                                   "mean": list(IMAGENET["mean"]), "std": list(IMAGENET["std"]),
                                   "crop_pct": 0.875, "crop_mode": "center"}  # fmt: skip
    template = variables_template(ARCH)
    variables = load_checkpoint(exported / "model.safetensors", template=template)
    ours = _seres_logits(ARCH, variables.to_variables(template), files, DataConfig(32))
    theirs = np.array([image["logits"] for image in timm["images"]])
    assert theirs.shape == ours.shape == (len(files), 3)
    assert np.array_equal(theirs.argmax(1), ours.argmax(1))
    assert np.abs(theirs - ours).max() < 1e-4 * max(1.0, np.abs(theirs).max())
