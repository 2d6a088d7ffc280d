"""The training loop: sharded data parallelism, resume, and the ``seres`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from seres_cli.main import main
from seres_jax.data import Dataset, load_synthetic
from seres_jax.formats import load_checkpoint
from seres_jax.registry import build_flax, build_torch
from seres_jax.train import TrainConfig, fit

from .helpers import HAVE_TORCH, cpu_devices_env, run_json_script, write_cifar10

if HAVE_TORCH:
    import safetensors.torch

SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")
    from seres_jax.data import load_digits
    from seres_jax.registry import build_flax
    from seres_jax.train import TrainConfig, fit, init_variables, make_mesh
    from seres_jax.parity import relative_error

    assert len(jax.devices()) == 8, jax.devices()
    data = load_digits()
    model = build_flax("seresnet_tiny:in_ch=1,base=8,n=1,reduction=4")
    host_vars = jax.device_get(init_variables(model, data.image_shape, 0))
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, max_steps=4, log_every=1)
    seen = []
    def record(r):
        if r["kind"] == "progress":
            seen.append(r["loss"])
    runs = {}
    for n in (1, 8):
        seen.clear()
        result = fit(model, data, config, variables=host_vars,
                     mesh=make_mesh(jax.devices()[:n]), on_log=record)
        assert result.state.params["fc"]["kernel"].sharding.num_devices == n
        runs[n] = (jax.device_get(result.state.variables), list(seen), result.history[-1])
    (v1, l1, h1), (v8, l8, h8) = runs[1], runs[8]
    errs = jax.tree.leaves(jax.tree.map(relative_error, v8, v1))
    print(json.dumps({
        "param_err": max(errs),
        "loss_err": max(abs(a - b) / abs(b) for a, b in zip(l8, l1)),
        "val_acc": [h1["val_acc"], h8["val_acc"]],
        "moved": max(jax.tree.leaves(
            jax.tree.map(relative_error, v1["params"], host_vars["params"]))),
    }))
    """
)


def test_eight_devices_match_one_device_on_the_same_global_batch():
    report = run_json_script(SHARDED_SCRIPT, devices=8, timeout=600)
    print(report)
    # Cross-device reductions sum in another order: float32 rounding only.
    assert report["param_err"] < 1e-4
    assert report["loss_err"] < 1e-5
    assert abs(report["val_acc"][0] - report["val_acc"][1]) < 0.01
    assert report["moved"] > 1e-3


def _small_dataset() -> Dataset:
    return load_synthetic(num_train=160, num_test=40, image_shape=(8, 8, 1), seed=1)


class _InterruptError(Exception):
    pass


def test_resume_continues_the_same_trajectory(tmp_path):
    """Interrupted after step 5 (last checkpoint: step 3, mid-epoch), resumed, it ends with
    exactly the parameters of an uninterrupted run; augmentation draws replay too."""
    data = _small_dataset()
    model = build_flax("seresnet_tiny:in_ch=1,base=8,n=1,reduction=4")
    config = TrainConfig(
        epochs=2, batch_size=32, lr=0.05, augment=True, checkpoint_every=3, log_every=1, keep=2
    )  # 5 steps per epoch, 10 in all
    straight = fit(model, data, config, workdir=tmp_path / "straight")

    def crash(record):
        if record["kind"] == "progress" and record["step"] == 5:
            raise _InterruptError

    with pytest.raises(_InterruptError):
        fit(model, data, config, workdir=tmp_path / "resumed", on_log=crash)
    steps = sorted(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert steps == [3]
    resumed = fit(model, data, config, workdir=tmp_path / "resumed", resume=True)
    assert int(resumed.state.step) == 10
    a, b = jax.device_get(straight.state.variables), jax.device_get(resumed.state.variables)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    kept = sorted(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert kept == [9, 10]
    # `seres convert` reads these checkpoints: the manager's root (latest step) or a step.
    for path in ("checkpoints", "checkpoints/10"):
        loaded = load_checkpoint(tmp_path / "resumed" / path).to_variables()
        jax.tree.map(np.testing.assert_array_equal, loaded, b)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--model", "resnet9000"], "unknown architecture 'resnet9000'"),
        (["--model", "seresnet_tiny:depth=3"], "has no argument(s) depth"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
        (["--dataset", "cifar10"], "cifar10"),
        (["--optimizer", "adam"], "optimizer must be one of"),
        (["--opt", "lamb", "--clip-mode", "l2"], "clip_mode must be one of"),
        (["--grad-accum-steps", "0", "--model-ema-decay", "1.5"], "grad_accum_steps must be >= 1"),
        (["--model-ema-decay", "1.5"], "model_ema_decay must be in [0, 1]"),
        (["--drop-path", "0.1"], "seresnet_tiny has no drop_path_rate"),
        (["--batch-size", "30", "--grad-accum-steps", "4"], "not divisible by the 1 devices x 4"),
        (["--sched", "cosine", "--warmup-epochs", "40"], "sched cosine: warmup_epochs=40"),
        (["--sched", "step", "--lr-base", "-1"], "lr_base must be a finite number > 0"),
        (["--export", "model.pt"], "--export must name a .safetensors file"),
        (["--batch-size", "5000"], "exceeds the 1438 training images"),
        (["--aa", "rand-m9-x3"], "unknown section 'x3'"),
        (["--aa", "rand-m40"], "magnitude m40 is beyond mmax 10"),
        (["--aa", "augmix-m5"], "aa: "),
        (["--reprob", "1.5"], "reprob must be in [0, 1]"),
        (["--aug-repeats", "0"], "--aug-repeats: must be a whole number >= 1"),
        # timm's epoch of 1438 // 256 * 256 = 1280 images holds no batch of 1400.
        (["--aug-repeats", "3", "--batch-size", "1400"], "fewer than its batch of 1400"),
        (["--initial-checkpoint", "/nonexistent/w.pth"], "/nonexistent/w.pth: no such file"),
        (["--initial-checkpoint", "hf-hub:timm"], "malformed hub name 'hf-hub:timm'"),
        (["--pretrained"], "seresnet_tiny"),
        (["--pretrained", "--initial-checkpoint", "x.pth"], "exclude each other"),
        (["--num-classes", "5"], "--num-classes 5 is fewer than the 10 classes of digits"),
        (["--in-chans", "3"], "--in-chans 3, but digits images have 1 channels"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = main(["train", "--workdir", str(workdir), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("seres: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not workdir.exists()


def test_batch_size_not_divisible_by_devices(tmp_path):
    env = cpu_devices_env(2, SERES_COMPILE_CACHE="off")
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "seres_cli.main", "train", "--batch-size", "33", "--workdir",
         str(workdir)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "seres: error: batch size 33 is not divisible by the 2 devices"
    ), proc.stderr
    assert not workdir.exists()


@pytest.mark.requires_torch
def test_train_cifar10_binary_end_to_end(tmp_path, capsys):
    """`seres train --dataset cifar10` on a directory in the real binary format, in bfloat16
    compute: metrics, plot, checkpoints and a float32 safetensors export that PyTorch loads
    strictly."""
    write_cifar10(tmp_path / "data" / "cifar-10-batches-bin", train_records=16, test_records=10)
    workdir, export = tmp_path / "run", tmp_path / "out" / "model.safetensors"
    arch = "seresnet_tiny:base=8,n=1,reduction=4"
    code = main([
        "train", "--model", arch, "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
        "--epochs", "2", "--batch-size", "16", "--precision", "bf16", "--workdir", str(workdir),
        "--export", str(export), "--checkpoint-every", "2", "--keep", "2", "--log-every", "2",
        "--no-progress",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(0 <= r["val_acc"] <= 1 and np.isfinite(r["train_loss"]) for r in records)
    assert (workdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [8, 10]
    torch_model = build_torch(arch)
    state_dict = safetensors.torch.load_file(str(export))
    torch_model.load_state_dict(state_dict, strict=True)
    assert {str(v.dtype) for v in state_dict.values()} == {"torch.float32", "torch.int64"}
    assert "final: val loss" in out


def test_an_existing_export_dir_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    workdir = tmp_path / "run"
    code = main(["train", "--workdir", str(workdir), "--export-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--export-dir {out} exists; pass --overwrite" in err
    assert not workdir.exists() and (out / "notes.txt").read_text() == "mine"
