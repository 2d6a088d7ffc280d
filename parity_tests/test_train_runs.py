"""Training runs as a user meets them: work directories (used, overwritten, resumed, corrupt),
divergence, kills at chosen points, bad recipe flags, and a custom loop on the public API.

A tiny network on the digits (batch 256: 5 steps per epoch) keeps each run to a few steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors.numpy

from seres_cli.main import main
from seres_jax.data import load_digits, splits_from_arrays, to_devices, train_dataset
from seres_jax.formats import load_checkpoint
from seres_jax.registry import build_flax
from seres_jax.train import (
    StepOptions,
    TrainConfig,
    TrainingError,
    TrainState,
    compile_steps,
    evaluate,
    fit,
    init_variables,
    make_mesh,
)

from .helpers import KILLABLE, TINY_ARCH, one_error_line, snapshot, train_tiny

STEPS_PER_EPOCH = 5  # 1,438 digits // 256


def _records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _checkpoint_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


# --------------------------------------------------------------------------- work directories


def test_a_used_workdir_is_refused_and_overwrite_starts_clean(tmp_path, capsys):
    workdir, export = tmp_path / "run", tmp_path / "model.safetensors"
    assert train_tiny(workdir, "--max-steps", "2", "--seed", "0", "--export", str(export)) == 0
    (workdir / "notes.txt").write_text("mine")
    (workdir / ".metrics.jsonl.bak").write_text("mine too")  # named like, not made by, seres
    (workdir / "data").mkdir()
    (workdir / "data" / "x.bin").write_bytes(b"\x00")
    before, exported = snapshot(workdir), export.read_bytes()
    capsys.readouterr()

    # A second run without a flag: refused, nothing touched.
    line = one_error_line(capsys, train_tiny(workdir, "--max-steps", "3", "--seed", "1"))
    assert line == (
        f"seres: error: work directory {workdir} already holds a run (checkpoints, "
        "metrics.jsonl, curves.png, config.json, tensorboard): continue it with --resume or "
        "start again with --overwrite"
    )
    assert snapshot(workdir) == before
    # --export naming an existing file: refused before training starts.
    other = tmp_path / "other"
    line = one_error_line(capsys, train_tiny(other, "--max-steps", "3", "--export", str(export)))
    assert line == f"seres: error: {export} exists; pass --overwrite to replace it"
    assert not other.exists() and export.read_bytes() == exported
    line = one_error_line(capsys, train_tiny(workdir, "--resume", "--overwrite"))
    assert line == "seres: error: --resume and --overwrite exclude each other"
    with pytest.raises(TrainingError, match="already holds a run"):
        fit(build_flax(TINY_ARCH, in_ch=1), load_digits(), TrainConfig(), workdir=workdir)
    assert snapshot(workdir) == before

    # --overwrite: only the new run's checkpoints and metrics; the user's files stay.
    assert train_tiny(workdir, "--max-steps", "3", "--seed", "1", "--overwrite",
                  "--export", str(export)) == 0  # fmt: skip
    assert (workdir / "notes.txt").read_text() == "mine"
    assert (workdir / ".metrics.jsonl.bak").read_text() == "mine too"
    assert (workdir / "data" / "x.bin").read_bytes() == b"\x00"
    assert [(r["epoch"], r["step"]) for r in _records(workdir)] == [(0, 3)]
    assert _checkpoint_steps(workdir) == [3]
    assert export.read_bytes() != exported
    converted = load_checkpoint(workdir / "checkpoints").to_state_dict()
    written = safetensors.numpy.load_file(str(export))
    assert converted.keys() == written.keys()
    for key, value in written.items():
        np.testing.assert_array_equal(converted[key], value)


def test_a_workdir_naming_a_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    line = one_error_line(capsys, train_tiny(path, "--max-steps", "1"))
    assert line == f"seres: error: work directory {path} is not a directory"
    assert path.read_text() == "x"


def test_resume_on_a_missing_workdir_starts_from_scratch(tmp_path, capsys):
    workdir = tmp_path / "new"
    assert train_tiny(workdir, "--max-steps", "1", "--resume") == 0
    err = capsys.readouterr().err
    assert err == (
        f"seres: warning: no checkpoint in {workdir / 'checkpoints'}: starting from scratch\n"
    )
    assert _checkpoint_steps(workdir) == [1]


# --------------------------------------------------------------------------- divergence


def _diverge(workdir: Path, capsys, *flags: str) -> tuple[str, int]:
    """A run at lr 1e6 that must stop: what it says diverged first and at which step."""
    export = workdir.parent / f"{workdir.name}.safetensors"
    code = train_tiny(workdir, "--lr", "1e6", "--schedule", "constant", "--epochs", "3",
                  "--export", str(export), *flags)  # fmt: skip
    line = one_error_line(capsys, code)
    match = re.fullmatch(
        r"seres: error: training diverged: non-finite (loss at|weights after) step (\d+); (.+) "
        r"\(try a lower lr\)",
        line,
    )
    assert match, line
    what, step, kept = match[1], int(match[2]), match[3]
    steps = _checkpoint_steps(workdir)
    if steps:
        assert kept == f"the last finite checkpoint, step {steps[-1]}, is kept in " + str(
            workdir / "checkpoints"
        )
        for leaf in jax.tree.leaves(load_checkpoint(workdir / "checkpoints").to_variables()):
            assert np.all(np.isfinite(leaf))
    else:
        assert kept == "no checkpoint was written"
    assert not export.exists()
    for record in _records(workdir) if (workdir / "metrics.jsonl").exists() else []:
        assert record["step"] < step
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
    assert not (workdir / "curves.png").exists()
    return what, step


def test_a_diverged_run_stops_keeps_finite_checkpoints_and_exports_nothing(tmp_path, capsys):
    # Checkpointing every step, the weights are checked before each save: the first
    # non-finite state is never saved, and the finite checkpoints before it stay.
    what, step = _diverge(tmp_path / "checked", capsys, "--checkpoint-every", "1", "--keep", "2",
                          "--log-every", "1")  # fmt: skip
    assert step >= 3
    assert _checkpoint_steps(tmp_path / "checked") == [step - 2, step - 1]
    # Without checkpoints, logging every step names the first non-finite loss: not before the
    # weights went non-finite (the running statistics can overflow before the loss does).
    per_step = _diverge(tmp_path / "per-step", capsys, "--log-every", "1")
    assert per_step[1] >= (step + 1 if what == "weights after" else step)
    # The loss of a 20-step logging window names the same step.
    assert _diverge(tmp_path / "windowed", capsys, "--log-every", "20") == per_step


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A 2-epoch run checkpointed at steps 4 and 8, and the same run uninterrupted to 10."""
    root = tmp_path_factory.mktemp("runs")
    args = ("--epochs", "2", "--checkpoint-every", "4", "--keep", "3")
    assert train_tiny(root / "straight", *args) == 0
    assert train_tiny(root / "partial", *args, "--max-steps", "8") == 0
    straight = load_checkpoint(root / "straight" / "checkpoints").to_variables()
    return root, args, straight


def test_resume_with_another_model_names_each_differing_shape_once(base_run, tmp_path, capsys):
    root = base_run[0]
    shutil.copytree(root / "partial", tmp_path / "run")
    capsys.readouterr()
    code = main([
        "train", "--model", "seresnet_tiny:base=8,n=1,reduction=4", "--batch-size", "256",
        "--epochs", "2", "--no-progress", "--workdir", str(tmp_path / "run"), "--resume",
        "--override",  # past config.json's check, to the checkpoint's own
    ])  # fmt: skip
    line = one_error_line(capsys, code)
    assert line.startswith(
        f"seres: error: checkpoint step 8 in {tmp_path / 'run' / 'checkpoints'} does not fit "
        "the model: params/fc/kernel: (16, 10) saved, (32, 10) expected; "
    ), line
    paths = re.findall(r"(?:params|batch_stats)/[\w/]+", line)
    assert len(paths) == len(set(paths)) == 6, line  # each once, six of them named
    assert line.endswith(" more)"), line


def _corrupt(step_dir: Path, how: str) -> None:
    if how == "no-checkpoint-metadata":
        (step_dir / "_CHECKPOINT_METADATA").unlink()
    elif how == "no-metadata":
        (step_dir / "default" / "_METADATA").unlink()
    elif how == "truncated":
        files = (p for p in step_dir.rglob("*") if p.is_file())
        largest = max(files, key=lambda p: p.stat().st_size)
        largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    else:
        shutil.rmtree(step_dir)
        step_dir.mkdir()


@pytest.mark.parametrize(
    ("how", "falls_back"),
    [("no-checkpoint-metadata", False), ("no-metadata", True), ("truncated", True),
     ("empty", True)],
)  # fmt: skip
def test_resume_past_a_corrupt_latest_checkpoint(base_run, how, falls_back, tmp_path, capsys):
    """A latest checkpoint orbax can still read resumes as usual; an unreadable one falls back to
    the newest readable one with one warning line. Either way the run ends where an
    uninterrupted one does."""
    root, args, straight = base_run
    workdir = tmp_path / "run"
    shutil.copytree(root / "partial", workdir)
    _corrupt(workdir / "checkpoints" / "8", how)
    capsys.readouterr()
    assert train_tiny(workdir, *args, "--resume") == 0
    err = capsys.readouterr().err
    if falls_back:
        assert re.fullmatch(
            rf"seres: warning: checkpoint step 8 in {re.escape(str(workdir / 'checkpoints'))} "
            r"is unreadable \(.+\); resuming from step 4 \(set aside as 8\.unreadable\)\n",
            err,
        ), err
        assert (workdir / "checkpoints" / "8.unreadable").is_dir()  # kept, for a post-mortem
    else:
        assert err == ""
    assert _checkpoint_steps(workdir) == [4, 8, 10]
    jax.tree.map(np.testing.assert_array_equal, load_checkpoint(workdir / "checkpoints")
                 .to_variables(), straight)  # fmt: skip
    assert [r["epoch"] for r in _records(workdir)] == [0, 1]


def test_resume_from_a_checkpoint_of_the_previous_release(base_run, tmp_path, capsys):
    """Checkpoints written before the epoch sums were kept hold the state alone: they still
    resume, to the same weights, and say that the resumed epoch's line is partial."""
    import orbax.checkpoint as ocp

    root, args, straight = base_run
    workdir = tmp_path / "run"
    shutil.copytree(root / "partial", workdir)
    old = workdir / "checkpoints"
    with ocp.StandardCheckpointer() as checkpointer:
        states = {s: checkpointer.restore((old / str(s) / "default").absolute()) for s in (4, 8)}
    shutil.rmtree(old)
    # Exactly how seres 0.1's `_Checkpoints.save` wrote them: one item, the state.
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(old.absolute(), options=options) as manager:
        for step, state in states.items():
            manager.save(step, args=ocp.args.StandardSave(state))
    capsys.readouterr()
    assert train_tiny(workdir, *args, "--resume") == 0
    err = capsys.readouterr().err
    assert err == (
        f"seres: warning: checkpoint step 8 in {old} holds no epoch sums (written by an "
        "earlier seres): epoch 2's line covers its steps after step 8 only\n"
    ), err
    jax.tree.map(np.testing.assert_array_equal, load_checkpoint(old).to_variables(), straight)
    assert [r["epoch"] for r in _records(workdir)] == [0, 1]


def test_killed_and_resumed_runs_match_an_uninterrupted_run(tmp_path):
    """SIGKILL right after epoch 0's metrics line (last checkpoint: step 4, mid-epoch), then
    right after the checkpoint at step 10 (an epoch's end), then resumed to the end (in this
    process, as the uninterrupted run): one line per epoch, each for the whole epoch, and the
    uninterrupted run's weights bit for bit."""
    argv = ["train", "--model", TINY_ARCH, "--batch-size", "256", "--epochs", "3", "--no-progress",
            "--checkpoint-every", "2", "--log-every", "3", "--keep", "3"]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main([*argv, "--workdir", str(straight)]) == 0
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DEFAULT_MATMUL_PRECISION": "highest",
           "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir}  # fmt: skip

    def run(point: str, count: int, *flags: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", KILLABLE, point, str(count), *argv, "--workdir",
                   str(killed), *flags]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    first = run("metrics", 1)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert [r["epoch"] for r in _records(killed)] == [0] and _checkpoint_steps(killed) == [2, 4]
    second = run("checkpoint", 3, "--resume")  # saves at steps 6, 8 and 10
    assert second.returncode == -signal.SIGKILL, second.stderr[-2000:]
    assert [r["epoch"] for r in _records(killed)] == [0, 1]
    assert _checkpoint_steps(killed) == [6, 8, 10]
    assert main([*argv, "--workdir", str(killed), "--resume"]) == 0

    expected, got = _records(straight), _records(killed)
    assert len(got) == len(expected) == 3
    for a, b in zip(expected, got, strict=True):
        assert {k: v for k, v in a.items() if k != "elapsed_s"} == {
            k: v for k, v in b.items() if k != "elapsed_s"
        }
    a = load_checkpoint(straight / "checkpoints").to_variables()
    b = load_checkpoint(killed / "checkpoints").to_variables()
    jax.tree.map(np.testing.assert_array_equal, a, b)


# --------------------------------------------------------------------------- bad recipe flags


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--warmup-epochs", "-1", "warmup_epochs must be a finite number >= 0, got -1.0"),
        ("--momentum", "-1", "momentum must be a finite number >= 0, got -1.0"),
        ("--seed", "-1", "seed must be in [0, 2**63), got -1"),
        ("--max-steps", "0", "max_steps must be >= 1, got 0"),
        ("--max-steps", "-3", "max_steps must be >= 1, got -3"),
        ("--checkpoint-every", "-1", "checkpoint_every must be >= 0, got -1"),
        ("--keep", "0", "keep must be >= 1, got 0"),
        ("--log-every", "0", "log_every must be >= 1, got 0"),
        ("--epochs", "0", "epochs must be >= 1, got 0"),
        ("--batch-size", "0", "batch_size must be >= 1, got 0"),
        ("--label-smoothing", "1", "label_smoothing must be in [0, 1), got 1.0"),
        ("--weight-decay", "-1", "weight_decay must be a finite number >= 0, got -1.0"),
        ("--lr", "0", "lr must be a finite number > 0, got 0.0"),
        ("--lr", "-0.1", "lr must be a finite number > 0, got -0.1"),
        ("--lr", "nan", "lr must be a finite number > 0, got nan"),
        ("--lr", "inf", "lr must be a finite number > 0, got inf"),
    ],
)
def test_a_bad_recipe_flag_is_one_line_and_writes_nothing(flag, value, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    line = one_error_line(capsys, train_tiny(workdir, flag, value))
    assert line == f"seres: error: {message}"
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("seresnet_tiny:in_ch=3", "--model has in_ch=3, but digits images have 1 channels"),
        ("seresnet_tiny:num_classes=3", "--model has num_classes=3, but digits has 10 classes"),
        # More classes than the data has too: a head with classes no label names.
        ("seresnet_tiny:num_classes=12", "--model has num_classes=12, but digits has 10 classes"),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_one_line(arch, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = main(["train", "--model", arch, "--workdir", str(workdir), "--no-progress"])
    assert one_error_line(capsys, code) == f"seres: error: {message}"
    assert not workdir.exists()


def test_the_library_lists_every_bad_field_together():
    with pytest.raises(TrainingError) as info:
        TrainConfig(lr=0.0, epochs=0, keep=0).validate(1)
    assert str(info.value) == (
        "lr must be a finite number > 0, got 0.0; epochs must be >= 1, got 0; "
        "keep must be >= 1, got 0"
    )


# --------------------------------------------------------------------------- custom loops


@pytest.fixture(scope="module")
def fitted():
    """``fit`` on the digits, for the custom loops to match."""
    splits = splits_from_arrays(load_digits())
    # The recipe of `_train` but the smoothing, which is not compiled in: the executables of
    # the command-line runs above serve these tests too.
    config = TrainConfig(epochs=1, batch_size=256, label_smoothing=0.1, log_every=2)
    return splits, config, fit(build_flax(TINY_ARCH, in_ch=1), splits, config)


@pytest.mark.parametrize("recipe", ["label-smoothing", "StepOptions"])
def test_a_custom_loop_on_the_public_api_matches_fit(fitted, recipe):
    """The loop of the README: ``TrainState.create``, ``compile_steps``, ``train_dataset`` on
    the devices with ``to_devices``, one batch a step, the config's schedule, optimizer and step
    options (``StepOptions.from_config``, as ``fit`` passes them, or without mixup the label
    smoothing alone); the weights ``fit`` gives, bit for bit."""
    splits, config, reference = fitted
    model = build_flax(TINY_ARCH, in_ch=1)
    steps_per_epoch = len(splits.train) // config.batch_size
    total = config.epochs * steps_per_epoch
    tx = config.make_tx(config.make_schedule(total, steps_per_epoch), total)
    steps = compile_steps(make_mesh())
    variables = init_variables(model, splits.image_shape, config.seed)
    state = jax.device_put(TrainState.create(model.apply, variables, tx), steps.replicated)
    options = StepOptions.from_config(config) if recipe == "StepOptions" else config.label_smoothing
    batches = iter(to_devices(train_dataset(splits, config.batch_size, config.seed), steps.batch))
    losses = []
    for _ in range(total):
        x, y = next(batches)
        state, metrics = steps.train(state, x, y, options)
        losses.append(jax.device_get(metrics))
    assert int(state.step) == total
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.state.variables),
                 jax.device_get(state.variables))  # fmt: skip
    for m in losses:  # 256 is a power of two: the mean times the count is exact
        assert m["loss"] == np.float32(m["loss_sum"] / m["count"])
    train_loss = sum(float(m["loss_sum"]) for m in losses) / (steps_per_epoch * config.batch_size)
    assert train_loss == pytest.approx(reference.history[-1]["train_loss"], rel=1e-12)
    val = evaluate(steps, state, splits, config.batch_size)
    assert (val["loss"], val["acc"]) == (
        reference.history[-1]["val_loss"],
        reference.history[-1]["val_acc"],
    )
    assert val["count"] == len(splits.val)
    # The options are arguments, not constants of the compiled step: other values (mixup
    # turned on too) run the same executable.
    before = steps.train._cache_size()
    x, y = next(batches)
    batches.close()
    if recipe == "StepOptions":
        options = dataclasses.replace(options, mixup=np.float32(0.4), cutmix=np.float32(1.0))
    else:
        options = 0.0
    state, metrics = steps.train(state, x, y, options)
    assert np.isfinite(float(metrics["loss"]))
    assert steps.train._cache_size() == before
