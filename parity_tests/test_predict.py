"""``seres predict`` (``seres_cli.predict``, ``seres_jax.predict``): a work directory, its timm
export and a bare checkpoint give the top-k classes of image files; the logits are ``seres
eval``'s on the same images (its loss and top-1 recomputed from them) and the model's own on
them in one batch; the last partial batch runs at its own size; the results files have timm's
``inference.py`` columns; ``--torch`` agrees with ``seres_torch``; every bad input is one error
line, and nothing is written.

The run is laid out as ``seres train`` writes one (``config.json``, an orbax checkpoint) for a
reduced seresnet18 on a 3-class folder of real photographs at 32 pixels, with seeded random
weights at He scale (logits of a few units, so losses and probabilities are not saturated):
nothing is trained, and each command compiles one small forward pass."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from parity_tests.helpers import one_error_line, run_record, snapshot
from parity_tests.photos import CLASS_NAMES, make_image_folder
from seres_cli.main import main
from seres_cli.predict import _results_text
from seres_jax.data import DataConfig, DataError, decode_rgb, eval_crop, normalize
from seres_jax.parity import FP32_TOL, relative_error
from seres_jax.predict import Agreement, find_images
from seres_jax.registry import build_flax, random_variables, variables_template
from seres_jax.train import TrainConfig

MODEL = "seresnet18:channels=8-16-32-64,layers=1-1-1-1"
ARCH = f"{MODEL},num_classes=3"
SIZE = 32


@pytest.fixture(scope="module")
def laid_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``photos/`` (3 classes, 3 validation images each), ``run/`` (a work directory) and
    ``model.safetensors`` (the same weights as a bare checkpoint)."""
    from seres_jax.convert import flax_to_state_dict
    from seres_jax.formats import save_state_dict, save_variables

    root = tmp_path_factory.mktemp("predict")
    folder = make_image_folder(root / "photos", classes=3, per_class=1, val_per_class=3)
    run = root / "run"
    run.mkdir()
    config = TrainConfig(model=MODEL, dataset="imagefolder", data_dir=str(folder), epochs=1,
                         batch_size=8, image_size=SIZE)  # fmt: skip
    (run / "config.json").write_text(json.dumps(run_record(config, ARCH), indent=2))
    variables = random_variables(ARCH)
    save_variables(variables, run / "checkpoints")
    save_state_dict(flax_to_state_dict(variables), root / "model.safetensors")
    return root


def _val_files(root: Path) -> list[Path]:
    """The validation images in the order ``seres predict`` walks them (and the val split
    numbers them): class directories sorted, each one's files sorted."""
    return sorted((root / "photos" / "val").glob("*/*"))


def _predict(argv: list[str], results: Path) -> dict[str, Any]:
    """``seres predict ARGV --results-file RESULTS`` (json), quietly; the results."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["predict", *argv, "--results-file", str(results), "--no-progress"]) == 0
    rows: dict[str, Any] = json.loads(results.read_text())
    return rows


def _logits(rows: dict[str, Any], classes: int = 3) -> np.ndarray:
    """Every class's logit per file, from results written with ``--topk`` all classes."""
    logits = np.zeros((len(rows), classes))
    for i, row in enumerate(rows.values()):
        logits[i, row["index"]] = row["logit"]
    return logits


@pytest.fixture(scope="module")
def run_rows(laid_out: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run's logits on its validation folder in batches of 4 (4, 4, then 1)."""
    out = tmp_path_factory.mktemp("rows") / "logits.json"
    argv = [str(laid_out / "run"), str(laid_out / "photos" / "val"), "--topk", "3",
            "--output-type", "logit", "--batch-size", "4"]  # fmt: skip
    return _predict(argv, out)


def test_logits_are_the_models_and_seres_evals(laid_out, run_rows, tmp_path):
    files = _val_files(laid_out)
    assert list(run_rows) == [str(f) for f in files]
    assert [row["label"][0] for row in run_rows.values()] == [
        CLASS_NAMES[i] for i in (row["index"][0] for row in run_rows.values())
    ]
    logits = _logits(run_rows)
    assert 1 < np.abs(logits).max() < 50  # not saturated: the loss below means something

    # The model on the eval transform's pixels, all nine in one batch.
    template = variables_template(ARCH)
    from seres_jax.formats import load_checkpoint

    variables = load_checkpoint(laid_out / "run" / "checkpoints", template=template)
    pixels = np.stack([eval_crop(decode_rgb(f.read_bytes(), f.name), SIZE, 0.875, "bicubic")
                       for f in files])  # fmt: skip
    images = normalize(pixels, DataConfig().mean, DataConfig().std)
    model = build_flax(ARCH)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    reference = forward(variables.to_variables(template), images)
    assert relative_error(logits, np.asarray(reference, np.float64)) < FP32_TOL.output

    # `seres eval` on the same images (the run's validation split): its loss and top-1 are
    # those of these logits.
    report = tmp_path / "eval.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["eval", str(laid_out / "run"), "--json", str(report), "--no-progress"]) == 0
    evaluated = json.loads(report.read_text())["jax"]
    labels = np.array([CLASS_NAMES.index(f.parent.name) for f in files])
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert evaluated["count"] == len(files)
    assert evaluated["acc"] == pytest.approx(np.mean(logits.argmax(1) == labels), abs=0)
    assert evaluated["loss"] == pytest.approx(-log_probs[np.arange(len(files)), labels].mean(),
                                              rel=1e-6)  # fmt: skip


def test_a_timm_export_predicts_the_same_with_its_label_names(laid_out, run_rows, tmp_path):
    from seres_jax.export import export_run

    export_run(laid_out / "run", tmp_path / "export")
    argv = [f"local-dir:{tmp_path / 'export'}", str(laid_out / "photos" / "val"), "--topk", "3",
            "--output-type", "logit", "--batch-size", "4"]  # fmt: skip
    rows = _predict(argv, tmp_path / "rows.json")
    assert rows == run_rows  # the same weights, preprocessing and classes: the same bits


def test_a_checkpoint_file_predicts_with_arch_and_indices(laid_out, run_rows, tmp_path):
    out = tmp_path / "rows.csv"
    argv = [str(laid_out / "model.safetensors"), str(laid_out / "photos" / "val"), "--arch", ARCH,
            "--image-size", str(SIZE), "--topk", "3", "--batch-size", "4",
            "--results-separate-col"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["predict", *argv, "--results-file", str(out), "--no-progress"]) == 0
    # No classes outside a run: indices alone, a column per rank.
    with out.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [
        "filename",
        *(f"{c}_{r}" for c in ("index", "prob") for r in range(3)),
    ]
    assert [r["filename"] for r in table] == list(run_rows)
    assert [[int(r[f"index_{k}"]) for k in range(3)] for r in table] == [
        r["index"] for r in run_rows.values()
    ]
    logits = _logits(run_rows)
    probs = np.exp(logits).max(1) / np.exp(logits).sum(1)
    np.testing.assert_allclose([float(r["prob_0"]) for r in table], probs, rtol=1e-5)
    said = printed.getvalue()
    assert f"{ARCH} on 9 images:" in said and "images/s, compile" in said


ROWS = [{"filename": "a/x.jpg", "index": [2, 0], "score": [0.75, 0.25]},
        {"filename": "b,c.png", "index": [1, 2], "score": [0.5, 0.375]}]  # fmt: skip
NAMES = ("cat", "dog", "emu")


def test_results_formats_have_timms_columns():
    # One class per image: plain values, as timm's inference.py writes --topk 1.
    top1 = [{"filename": "a.jpg", "index": [2], "score": [0.5]}]
    assert (
        _results_text(top1, NAMES, "prob", "csv", False)
        == "filename,index,label,prob\na.jpg,2,emu,0.5\n"
    )
    lines = _results_text(ROWS, NAMES, "prob", "csv", False).splitlines()
    assert lines[0] == "filename,index,label,prob"
    assert lines[2] == '"b,c.png","[1, 2]","[""dog"", ""emu""]","[0.5, 0.375]"'
    separate = _results_text(ROWS, None, "logit", "csv", True).splitlines()
    assert separate[:2] == ["filename,index_0,index_1,logit_0,logit_1", "a/x.jpg,2,0,0.75,0.25"]
    assert json.loads(_results_text(ROWS, NAMES, "prob", "json", False)) == {
        "a/x.jpg": {"index": [2, 0], "label": ["emu", "cat"], "prob": [0.75, 0.25]},
        "b,c.png": {"index": [1, 2], "label": ["dog", "emu"], "prob": [0.5, 0.375]},
    }
    records = [json.loads(line) for line in _results_text(ROWS, NAMES, "prob", "jsonl", True)
               .splitlines()]  # fmt: skip
    assert records[1] == {"filename": "b,c.png", "index_0": 1, "index_1": 2, "label_0": "dog",
                          "label_1": "emu", "prob_0": 0.5, "prob_1": 0.375}  # fmt: skip


def test_files_are_found_in_order_once_and_checked(tmp_path):
    folder = make_image_folder(tmp_path / "photos", classes=2, per_class=1, val_per_class=2)
    (folder / "val" / ".DS_Store").write_bytes(b"hidden: ignored")
    nested = folder / "val" / "c1_flower" / "deeper"
    nested.mkdir()
    shutil.copy(folder / "train" / "c0_pagoda" / "train_0_000.jpg", nested / "a.jpg")
    first = folder / "val" / "c1_flower" / "val_1_001.webp"
    files = find_images([first, folder / "val"])
    expected = [first, *sorted((folder / "val" / "c0_pagoda").iterdir()),
                folder / "val" / "c1_flower" / "val_1_000.png", nested / "a.jpg"]  # fmt: skip
    assert files.paths == [str(p) for p in expected]  # sorted walk, each file once
    assert files[0]["name"] == str(first) and files[0]["image"] == first.read_bytes()
    whole = (folder / "val" / "c0_pagoda" / "val_0_000.jpg").read_bytes()
    (folder / "val" / "c0_pagoda" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"^1 bad image file: .*cut\.jpg \(truncated JPEG"):
        find_images([folder / "val"])
    kept = find_images([folder / "val"], skip_bad_images=True)
    assert [s.name for s in kept.skipped] == [str(folder / "val" / "c0_pagoda" / "cut.jpg")]
    assert sorted(kept.paths) == sorted(files.paths)


def test_agreement_counts_top1_and_the_largest_difference():
    agreement = Agreement()
    ours = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    agreement.add(ours, ours + np.array([[0.0, 0.0, 0.0], [-0.5, 4.0, 0.0]]))
    assert agreement.to_dict() == {"count": 2, "top1_agreement": 0.5, "max_logit_diff": 4.0,
                                   "relative_logit_diff": 1.0}  # fmt: skip


@pytest.mark.requires_torch
def test_torch_beside_it_agrees(laid_out, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["predict", str(laid_out / "run"), str(laid_out / "photos" / "val"),
                     "--torch", "--batch-size", "4", "--no-progress"]) == 0  # fmt: skip
    line = next(x for x in printed.getvalue().splitlines() if x.startswith("PyTorch beside it"))
    assert "the same top-1 class on 100.00% of 9 images" in line
    relative = float(line.split("(")[1].split(" of the largest")[0])
    assert relative < FP32_TOL.output


def test_bad_images_are_skipped_and_reported_when_asked(laid_out, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = _val_files(laid_out)[0]
    shutil.copy(good, folder / good.name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.jpg").write_text("not a JPEG either")
    out = tmp_path / "rows.jsonl"
    assert main(["predict", str(laid_out / "run"), str(folder), "--results-file", str(out),
                 "--skip-bad-images", "--no-progress"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    warning = [x for x in captured.err.splitlines() if x.startswith("seres: warning:")]
    assert len(warning) == 1 and "skipped 2 bad files" in warning[0]
    assert "notes.txt (not an image file name)" in warning[0] and "fake.jpg" in warning[0]
    assert "on 1 image, 2 skipped" in captured.out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["filename"] for r in rows] == [str(folder / good.name)]
    assert rows[0]["label"] == [CLASS_NAMES[i] for i in rows[0]["index"]]
    assert len(rows[0]["index"]) == 3  # the default top-5, cut to the 3 classes


def _digits_run(root: Path) -> Path:
    run = root / "digits_run"
    run.mkdir()
    config = TrainConfig(model="seresnet_tiny", dataset="digits")
    (run / "config.json").write_text(json.dumps(run_record(config, "seresnet_tiny:in_ch=1")))
    return run


def _changed_run(laid_out: Path, root: Path, name: str, change: Callable[[Any], None]) -> Path:
    """The laid-out run's ``config.json`` in ``root/name``, changed by ``change``."""
    run = root / name
    run.mkdir()
    record = json.loads((laid_out / "run" / "config.json").read_text())
    change(record)
    (run / "config.json").write_text(json.dumps(record))
    return run


def _data_dir_gone(record: Any) -> None:
    record["config"]["data_dir"] += "-gone"


def _mean_of_letters(record: Any) -> None:
    record["data"]["val"]["mean"] = "abc"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{run}", "{tmp}/empty"], "{tmp}/empty: no image files in it"),
        (["{run}", "{tmp}/text"], "1 file without an image suffix: {tmp}/text/notes.txt;"),
        (["{run}", "{tmp}/text/fake.jpg"], "1 bad image file: {tmp}/text/fake.jpg (not a readable"),
        (["{run}", "{tmp}/missing.jpg"], "{tmp}/missing.jpg: no such file"),
        (["{run}", "{val}", "--topk", "0"], "argument --topk: must be a positive integer, got 0"),
        (["{run}", "{val}", "--topk", "4"], f"--topk 4: {ARCH} has 3 classes"),
        (["{run}", "{val}", "--results-file", "{tmp}/old.csv"], "{tmp}/old.csv exists; pass"),
        (["{root}/model.safetensors", "{val}"], "--arch is needed"),
        (["{moved}", "{val}", "--label-type", "name"], "--label-type name: {moved} names no"),
        (["{broken}", "{val}"], "{broken}/config.json: data.val is not a preprocessing of seres"),
        (["{digits}", "{val}"], "a digits run's model takes that dataset's arrays, not image"),
        (["{run}", "{val}", "--torch", "--batch-size", "x"], "argument --batch-size: must be a"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line_and_writes_nothing(laid_out, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not an image")
    (tmp_path / "text" / "fake.jpg").write_text("not a JPEG")
    (tmp_path / "old.csv").write_text("kept")
    places = {"run": laid_out / "run", "root": laid_out, "tmp": tmp_path,
              "val": laid_out / "photos" / "val", "digits": _digits_run(tmp_path),
              "moved": _changed_run(laid_out, tmp_path, "moved", _data_dir_gone),
              "broken": _changed_run(laid_out, tmp_path, "broken", _mean_of_letters)}  # fmt: skip
    before, run_before = snapshot(tmp_path), snapshot(laid_out)
    line = one_error_line(capsys, main(["predict", *(a.format(**places) for a in argv),
                                        "--no-progress"]))  # fmt: skip
    assert message.format(**places) in line
    assert snapshot(tmp_path) == before and snapshot(laid_out) == run_before


def test_a_hub_model_names_its_classes_and_predicts_its_photos(tmp_path, monkeypatch):
    from parity_tests.hub_cache import hub_env, make_hub_cache

    source = Path(__file__).parent / "fixtures" / "timm_hub" / "seresnet18_photos"
    files = {name: source / name for name in ("config.json", "model.safetensors")}
    make_hub_cache(tmp_path / "hub", "timm/seresnet18_photos", files)
    hub_env(monkeypatch, tmp_path / "hub")
    folder = make_image_folder(tmp_path / "photos", classes=6, per_class=1, val_per_class=2)
    rows = _predict(["hf-hub:timm/seresnet18_photos", str(folder / "val"), "--topk", "2"],
                    tmp_path / "rows.json")  # fmt: skip
    # timm trained these weights on such photos (fixtures/record_timm_hub.py): its label_names
    # name the classes, and the photos are told apart.
    assert [row["label"][0] for row in rows.values()] == [Path(n).parent.name for n in rows]


@pytest.mark.slow
def test_worker_processes_predict_the_same(laid_out, run_rows, tmp_path):
    argv = [str(laid_out / "run"), str(laid_out / "photos" / "val"), "--topk", "3",
            "--output-type", "logit", "--batch-size", "4", "--workers", "2"]  # fmt: skip
    assert _predict(argv, tmp_path / "rows.json") == run_rows


@pytest.mark.slow
def test_a_fine_tuned_run_predicts_as_it_validated(tmp_path):
    """A run fine-tuned from timm's 32-pixel weights predicts at the 32 pixels it validated at
    (its recorded preprocessing, not the architecture's 224): the loss and top-1 of its
    predictions are its last validation's."""
    from seres_jax.train import read_metrics

    source = Path(__file__).parent / "fixtures" / "timm_hub" / "seresnet18_photos"
    folder = make_image_folder(tmp_path / "photos", classes=3, per_class=8, val_per_class=4)
    workdir = tmp_path / "run"
    argv = ["train", "--initial-checkpoint", f"local-dir:{source}", "--num-classes", "3",
            "--dataset", "imagefolder", "--data-dir", str(folder), "--epochs", "2",
            "--batch-size", "8", "--workdir", str(workdir), "--no-progress"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    rows = _predict([str(workdir), str(folder / "val"), "--topk", "3", "--output-type", "logit"],
                    tmp_path / "rows.json")  # fmt: skip
    logits = _logits(rows)
    labels = np.array([CLASS_NAMES.index(Path(name).parent.name) for name in rows])
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    last = read_metrics(workdir)[-1]
    assert np.mean(logits.argmax(1) == labels) == last["val_acc"]
    assert -log_probs[np.arange(len(labels)), labels].mean() == pytest.approx(
        last["val_loss"], rel=1e-5
    )


def test_the_benchmark_takes_start_up_out_and_compares_top1(monkeypatch, tmp_path):
    """``benchmarks/seres_bench/predict_bench.py`` from canned runs: medians per side and size,
    the marginal rate between the sizes, and the top-1 classes of seres' and timm's CSVs."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from seres_bench.predict_bench import _finish, predict_markdown

    runs = [{"side": side, "images": n, "round": r, "wall_s": wall, "maxrss_mib": 900.0,
             **({"own_img_s": 20.0, "compile_s": 1.0} if side == "seres" else {})}
            for side, n, r, wall in [("seres", 16, 0, 8.0), ("seres", 16, 1, 10.0),
                                     ("seres", 48, 0, 12.0), ("seres", 48, 1, 12.0),
                                     ("timm", 16, 0, 10.0), ("timm", 16, 1, 10.0),
                                     ("timm", 48, 0, 18.0), ("timm", 48, 1, 18.0)]]  # fmt: skip
    (tmp_path / "predict-seres-16.csv").write_text(
        'filename,index,prob\n/d/a.jpg,"[3, 1]","[0.5, 0.2]"\n/d/b.jpg,"[7, 2]","[0.6, 0.1]"\n'
    )
    (tmp_path / "predict-timm-16.csv").write_text(  # timm: numpy's text, base names
        "filename,index,prob\na.jpg,[3 1],[0.5 0.2]\nb.jpg,[2 7],[0.6 0.1]\n"
    )
    section = {"settings": {"sizes": [16, 48], "arch": "seresnet50", "batch": 32, "workers": 2,
                            "topk": 5, "rounds": 2}, "runs": runs, "errors": [],
               "reference": "timm", "reference_note": "timm 1.0.31"}  # fmt: skip
    _finish(section, tmp_path, ("seres", "timm"))
    summary = section["summary"]
    assert summary["seres"]["sizes"]["16"]["wall_s"] == 9.0  # the median of the rounds
    assert summary["seres"]["marginal_img_s"] == 32 / 3 and summary["timm"]["marginal_img_s"] == 4
    assert summary["marginal_ratio"] == pytest.approx(8 / 3)
    assert summary["top1_agreement"] == {"16": {"count": 2, "same_top1": 1}}
    text = predict_markdown({"predict": section})
    assert "seres 10.7, timm 4.0, ratio 2.67x" in text
    assert "Top-1 classes identical on 1 of 2 images (16-image folder)." in text
