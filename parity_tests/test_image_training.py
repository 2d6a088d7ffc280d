"""The zoo trained end to end on image files: ``seres train -c args.yaml`` with the file
timm's ``train.py`` wrote for an RSB A1 run, on an image folder of real photographs (grain
workers, RandomResizedCrop, RandAugment, repeated augmentation, random erasing, mixup and
cutmix, LAMB, BCE, stochastic depth, model EMA, gradient clipping and accumulation), killed
mid-epoch and resumed to the uninterrupted run's weights bit for bit, ``seres eval --torch``,
the export; 8 devices against 1 on an image folder with the same recipe; bad image data as one
error line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from parity_tests.helpers import HAVE_TORCH, KILLABLE, one_error_line, run_json_script
from parity_tests.photos import make_image_folder
from seres_cli.main import main
from seres_jax.formats import load_checkpoint
from seres_jax.train import read_metrics

# A reduced-width seresnet18 (timm's layout and stem), one block a stage.
ARCH = "seresnet18:channels=8-16-32-64,layers=1-1-1-1"


# timm's recipe pieces, each on: LAMB, BCE on the mixed targets, stochastic depth, the model
# EMA with warmup, clipping and 2 micro-batches an update.
RECIPE = ["--opt", "lamb", "--lr", "0.01", "--bce-loss", "--drop-path", "0.1", "--model-ema",
          "--model-ema-warmup", "--clip-grad", "1.0", "--grad-accum-steps", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 classes: 24 training images (3 steps an epoch at batch 8), 12 validation images.
    return make_image_folder(tmp_path_factory.mktemp("photos"), classes=3, per_class=8,
                             val_per_class=4)  # fmt: skip


def _train_argv(folder: Path) -> list[str]:
    return ["train", "--model", ARCH, "--dataset", "imagefolder", "--data-dir", str(folder),
            "--image-size", "32", "--batch-size", "8", "--epochs", "2", "--workers", "2",
            "--color-jitter", "0.4", "--mixup", "0.2", "--cutmix", "1.0",
            "--label-smoothing", "0.1", "--checkpoint-every", "2", "--log-every", "1",
            "--no-progress", *RECIPE]  # fmt: skip


FIXTURES = Path(__file__).parent / "fixtures"


def _rsb_argv(folder: Path, tmp_path: Path) -> list[str]:
    """``seres train -c args.yaml`` with the ``args.yaml`` timm's ``train.py`` wrote for an RSB
    A1 run (recorded by ``fixtures/record_timm_args.py``: LAMB, BCE with a target threshold,
    RandAugment ``rand-m7-mstd0.5-inc1``, 3 repeated augmentations, mixup/cutmix, drop path,
    2 micro-batches), reduced to the photo folder, 32 px, the reduced seresnet18 and 2 epochs,
    with the pieces A1 leaves off turned on: random erasing, the EMA, clipping."""
    import yaml

    args = yaml.safe_load((FIXTURES / "timm_args" / "head_rsb_a1.yaml").read_text())
    assert (args["opt"], args["aa"], args["aug_repeats"], args["grad_accum_steps"]) == (
        "lamb", "rand-m7-mstd0.5-inc1", 3.0, 2)  # fmt: skip
    args.update(
        data_dir=str(folder), model=ARCH, img_size=32, batch_size=4, epochs=2, amp=False,
        reprob=0.25, remode="pixel", model_ema=True, model_ema_warmup=True, clip_grad=1.0,
        workers=2, warmup_epochs=1,
    )  # fmt: skip
    config = tmp_path / "args.yaml"
    config.write_text(yaml.safe_dump(args))
    return ["train", "-c", str(config), "--checkpoint-every", "2", "--log-every", "1",
            "--no-progress"]  # fmt: skip


@pytest.mark.skipif(not HAVE_TORCH, reason="seres eval --torch and the export need PyTorch")
def test_zoo_model_on_an_image_folder_killed_resumed_evaluated_exported(folder, tmp_path, capsys):
    argv = _rsb_argv(folder, tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    export = tmp_path / "model.safetensors"
    assert main([*argv, "--workdir", str(straight), "--export", str(export)]) == 0

    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir}  # fmt: skip
    command = [sys.executable, "-c", KILLABLE, "checkpoint", "2", *argv, "--workdir", str(killed)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # Killed right after the checkpoint of step 4, mid-epoch 2, with worker processes running.
    assert sorted(int(p.name) for p in (killed / "checkpoints").iterdir()) == [2, 4]
    assert (killed / "checkpoints" / "4" / "data").is_dir()  # the grain iterator's position
    assert main([*argv, "--workdir", str(killed), "--resume"]) == 0

    # The same samples and augmentation draws (crops, flips, jitter, mixup, drop-path masks):
    # the same weights, optimizer state and EMA.
    a = load_checkpoint(straight / "checkpoints").to_variables()
    b = load_checkpoint(killed / "checkpoints").to_variables()
    jax.tree.map(np.testing.assert_array_equal, a, b)
    ema = {"ema_val_loss", "ema_val_acc"}
    assert all(ema <= r.keys() for r in read_metrics(killed))
    drop = {"elapsed_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(straight)] == [
        {k: v for k, v in r.items() if k not in drop} for r in read_metrics(killed)
    ]

    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["eval", str(killed), "--torch", "--json", str(report), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "identical argmax on 100.00% of 12 images" in out, out
    result = json.loads(report.read_text())
    assert result["jax"]["count"] == 12
    assert result["torch"]["agreement"] == 1.0
    assert result["torch"]["max_logit_diff"] < 1e-4
    assert result["torch"]["jax_top1"] == pytest.approx(result["jax"]["acc"])

    import safetensors.torch

    from seres_jax.registry import build_torch

    torch_model = build_torch(f"{ARCH},num_classes=3")
    torch_model.load_state_dict(safetensors.torch.load_file(str(export)), strict=True)


EIGHT_VS_ONE = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    import jax, numpy as np
    from parity_tests.photos import make_image_folder
    from seres_jax.data import load_dataset
    from seres_jax.parity import relative_error
    from seres_jax.registry import build_flax
    from seres_jax.train import TrainConfig, fit, make_mesh, run_arch

    root = make_image_folder(Path(tempfile.mkdtemp()), classes=3, per_class=16,
                             val_per_class=4)
    # Batch 16: 8 devices x 2 micro-batches of timm's recipe.
    config = TrainConfig(model=sys.argv[1], dataset="imagefolder", data_dir=str(root),
                         image_size=32, batch_size=16, epochs=2, lr=0.01, color_jitter=0.4,
                         mixup=0.2, cutmix=1.0, log_every=1, optimizer="lamb", bce_loss=True,
                         drop_path=0.1, model_ema=True, model_ema_warmup=True, clip_grad=1.0,
                         grad_accum_steps=2, aa="rand-m7-mstd0.5-inc1", aug_repeats=3,
                         reprob=0.25, train_interpolation="random")
    splits = load_dataset("imagefolder", root, 0, config.data_options())
    model = build_flax(run_arch(config, 3, splits.num_classes))
    runs = {}
    for n in (1, 8):
        losses = []
        result = fit(model, splits, config, mesh=make_mesh(jax.devices()[:n]),
                     on_log=lambda r: losses.append(r["loss"]) if r["kind"] == "progress" else 0)
        runs[n] = (jax.device_get((result.state.params, result.state.ema)), losses)
    errors = jax.tree.leaves(jax.tree.map(relative_error, runs[8][0], runs[1][0]))
    print(json.dumps({"devices": jax.device_count(), "param_err": max(errors),
                      "loss_err": max(abs(a - b) / abs(b) for a, b in zip(runs[8][1], runs[1][1])),
                      "steps": len(runs[1][1])}))
    """
)


def test_eight_devices_match_one_on_an_image_folder():
    report = run_json_script(
        EIGHT_VS_ONE, ARCH, devices=8, timeout=600, JAX_DEFAULT_MATMUL_PRECISION="highest",
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    )  # fmt: skip
    print(report)
    assert report["devices"] == 8 and report["steps"] == 6
    # The same global batches (crops, jitter, mixup draws); cross-device reductions sum in
    # another order: rounding only, grown over 6 LAMB steps (measured 5.2e-5 and 1.6e-7).
    assert report["param_err"] < 1e-4
    assert report["loss_err"] < 1e-4


# --------------------------------------------------------------------------- bad image data


def _corrupt(root: Path) -> str:
    bad = next((root / "train").glob("*/*.jpg"))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated
    return bad.name


def _no_val(root: Path) -> str:
    import shutil

    shutil.rmtree(root / "val")
    return "val"


def _empty_class(root: Path) -> str:
    (root / "train" / "zz_empty").mkdir()
    (root / "val" / "zz_empty").mkdir()
    return "zz_empty"


def _not_an_image(root: Path) -> str:
    (next((root / "train").iterdir()) / "notes.txt").write_text("not a picture")
    return "notes.txt"


@pytest.mark.parametrize("damage", [_corrupt, _no_val, _empty_class, _not_an_image])
def test_bad_image_folder_is_one_line_naming_it_and_writes_nothing(damage, tmp_path, capsys):
    root = make_image_folder(tmp_path / "photos", classes=2, per_class=4, val_per_class=2)
    named = damage(root)
    workdir = tmp_path / "run"
    code = main([*_train_argv(root), "--workdir", str(workdir)])
    line = one_error_line(capsys, code)
    assert named in line, line
    assert not workdir.exists()


def test_skip_bad_images_counts_them_and_trains(tmp_path, capsys):
    root = make_image_folder(tmp_path / "photos", classes=2, per_class=4, val_per_class=2)
    named = _corrupt(root)
    argv = ["train", "--model", ARCH, "--dataset", "imagefolder", "--data-dir", str(root),
            "--image-size", "16", "--batch-size", "4", "--epochs", "1", "--no-progress",
            "--skip-bad-images"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "seres: warning: skipped 1 bad file" in err and named in err, err


def test_class_count_other_than_the_models_is_refused(folder, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = main([*_train_argv(folder), "--model", f"{ARCH},num_classes=1000",
                 "--workdir", str(workdir)])  # fmt: skip
    line = one_error_line(capsys, code)
    assert "num_classes=1000" in line and "3 classes" in line, line
    assert not workdir.exists()


def test_truncated_shard_is_one_line_naming_it(folder, tmp_path, capsys):
    packed = tmp_path / "packed"
    assert main(["data", "pack", str(folder), str(packed), "--shards", "2"]) == 0
    capsys.readouterr()
    shard = sorted(packed.glob("train-*.array_record"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    workdir = tmp_path / "run"
    code = main(["train", "--model", ARCH, "--dataset", "arrayrecord", "--data-dir", str(packed),
                 "--image-size", "16", "--batch-size", "4", "--epochs", "1", "--no-progress",
                 "--workdir", str(workdir)])  # fmt: skip
    line = one_error_line(capsys, code)
    assert shard.name in line, line
    assert not workdir.exists()
