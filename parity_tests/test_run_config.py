"""Runs that describe themselves: ``config.json`` in the work directory, resumes checked against
it (``--override`` recorded), ``seres convert`` and ``seres eval`` reading the architecture from
it, and the persistent compilation cache of the commands.

A tiny network on the digits (batch 256: 5 steps per epoch) keeps each run to a few steps.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import seres_jax.train as train
import seres_jax.train.loop as loop
from seres_cli.main import main

from .helpers import TINY_ARCH, one_error_line, snapshot, train_tiny

FULL_ARCH = "seresnet_tiny:in_ch=1,num_classes=10,base=4,n=1,reduction=4"


def _config(workdir: Path) -> dict:
    return json.loads((workdir / "config.json").read_text())


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """Two steps of a run, checkpoint at step 2; tests copy it."""
    workdir = tmp_path_factory.mktemp("base") / "run"
    assert train_tiny(workdir, "--max-steps", "2") == 0
    return workdir


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    shutil.copytree(base_run, tmp_path / "run")
    return tmp_path / "run"


def test_the_run_length_and_augmentation_come_from_the_config_and_the_dataset():
    config = train.TrainConfig(batch_size=256, epochs=3, max_steps=7)
    assert config.steps(1438) == train.RunSteps(per_epoch=5, total=15, last=7)
    assert dataclasses.replace(config, max_steps=None).steps(1438).last == 15
    assert (config.augments, train.TrainConfig(dataset="cifar10").augments) == (False, True)
    assert not train.TrainConfig(dataset="cifar10", augment=False).augments


def test_config_json_is_written_before_the_first_step(tmp_path, monkeypatch):
    workdir, seen = tmp_path / "run", []
    compile_steps = train.compile_steps

    def spying(mesh, *args):
        steps = compile_steps(mesh, *args)

        def step(*args):
            seen.append((workdir / "config.json").is_file())
            return steps.train(*args)

        return dataclasses.replace(steps, train=step)

    monkeypatch.setattr(loop, "compile_steps", spying)  # where `fit` looks it up
    assert train_tiny(workdir, "--max-steps", "1") == 0
    assert seen == [True]
    record = _config(workdir)
    assert record["config"] == {
        **json.loads(json.dumps(dataclasses.asdict(train.TrainConfig()))),  # tuples as lists
        "model": TINY_ARCH, "dataset": "digits", "epochs": 1, "batch_size": 256, "augment": False,
        "max_steps": 1,
    }  # fmt: skip
    assert record["arch"] == FULL_ARCH
    assert set(record["versions"]) == {"seres", "jax", "jaxlib", "flax", "optax"}
    assert record["versions"]["jax"] == jax.__version__
    assert record["device_count"] == jax.device_count()
    assert record["overrides"] == []


def test_resume_with_another_model_and_lr_lists_each_difference_and_writes_nothing(run, capsys):
    before = snapshot(run)
    other = "seresnet_tiny:base=8,n=1,reduction=4"
    code = train_tiny(run, "--model", other, "--lr", "0.2", "--max-steps", "3", "--resume")
    assert one_error_line(capsys, code) == (
        f"seres: error: --resume: {run / 'config.json'} differs from this command: "
        f"model '{TINY_ARCH}' -> '{other}'; lr 0.1 -> 0.2 (pass --override to resume with these "
        "changes)"
    )
    assert snapshot(run) == before
    code = train_tiny(run, "--epochs", "2", "--resume")  # epochs shape the schedule: the recipe
    assert one_error_line(capsys, code).endswith(": epochs 1 -> 2 (pass --override to resume "
                                                  "with these changes)")  # fmt: skip
    assert snapshot(run) == before


def test_override_is_recorded_and_a_longer_run_needs_none(run, capsys):
    assert train_tiny(run, "--max-steps", "3", "--log-every", "1", "--resume") == 0
    assert _config(run)["overrides"] == []
    assert _config(run)["config"]["max_steps"] == 3
    assert train_tiny(run, "--max-steps", "4", "--lr", "0.2", "--override", "--resume") == 0
    record = _config(run)
    assert record["config"]["lr"] == 0.2
    assert record["overrides"] == [{"step": 3, "changes": {"lr": [0.1, 0.2]}}]
    capsys.readouterr()
    assert one_error_line(capsys, train_tiny(run, "--override")) == (
        "seres: error: --override goes with --resume"
    )


def test_a_workdir_without_config_json_resumes_with_a_warning(run, capsys):
    (run / "config.json").unlink()
    capsys.readouterr()
    # The lr of the test above: its compiled step is in the session's compilation cache.
    assert train_tiny(run, "--max-steps", "3", "--lr", "0.2", "--resume") == 0
    assert capsys.readouterr().err == (
        f"seres: warning: {run} has no config.json (a run of an earlier seres): resuming "
        "without checking that the model, dataset and recipe are the same\n"
    )
    assert _config(run)["config"]["lr"] == 0.2


@pytest.mark.parametrize(
    "text", ['{"config": ', "[]", '{"config": {"lr": "0.1"}}', '{"config": {}, "arch": 3}']
)
def test_a_damaged_config_json_is_one_error_line(run, text, tmp_path, capsys):
    (run / "config.json").write_text(text)
    before = snapshot(run)
    capsys.readouterr()
    message = f"seres: error: {run / 'config.json'}: not a run description of seres"
    assert one_error_line(capsys, train_tiny(run, "--resume")) == message
    assert one_error_line(capsys, main(["eval", str(run)])) == message
    out = tmp_path / "out.safetensors"
    assert one_error_line(capsys, main(["convert", str(run / "checkpoints"), str(out)])) == message
    assert snapshot(run) == before and not out.exists()


def test_convert_reads_the_architecture_from_config_json_and_is_strict(run, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "model.safetensors"
    assert main(["convert", str(run / "checkpoints"), str(out)]) == 0
    assert capsys.readouterr().out == (
        f"{run / 'checkpoints'} (orbax) -> {out} (safetensors): 73 tensors, checked against "
        f"{FULL_ARCH} (from {run / 'config.json'})\n"
    )
    step = tmp_path / "step.safetensors"
    assert main(["convert", str(run / "checkpoints" / "2"), str(step)]) == 0
    assert step.read_bytes() == out.read_bytes()

    record = _config(run)
    record["arch"] = FULL_ARCH.replace("base=4", "base=8")
    (run / "config.json").write_text(json.dumps(record))
    other = tmp_path / "other.safetensors"
    code = main(["convert", str(run / "checkpoints"), str(other)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0] == (
        f"seres: error: checking {run / 'checkpoints'} against {record['arch']} (from "
        f"{run / 'config.json'}) failed with 60 problem(s):"
    )
    assert "  - shape mismatch: params/fc/kernel is (16, 10), model expects (32, 10)" in err
    assert not other.exists()


def test_eval_of_a_workdir_and_of_an_exported_file(run, tmp_path, capsys):
    """``seres eval`` gives the validation figures of the run's last metrics line, from the
    work directory or from an export, at any batch size."""
    val = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])

    def expected(src: Path) -> str:
        figures = (f"top-1 {val['val_acc']:.4f}, top-5 {val['val_acc5']:.4f}, "
                   f"loss {val['val_loss']:.4f}")  # fmt: skip
        what = f"{src}: {FULL_ARCH} on the digits val split (359 images)"
        return re.escape(f"{what}: {figures}; ") + (
            r"[\d.]+ images/s in batches of \d+, after [\d.]+ s compiling\n"
        )

    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(expected(run), out), out
    exported = tmp_path / "model.safetensors"
    assert main(["convert", str(run / "checkpoints"), str(exported)]) == 0
    capsys.readouterr()
    code = main(["eval", str(exported), "--arch", TINY_ARCH, "--batch-size", "100",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(expected(exported), out), out
    line = one_error_line(capsys, main(["eval", str(exported)]))
    assert line == (
        f"seres: error: --arch is needed: {exported} is not part of a `seres train` work "
        "directory with a config.json naming its model"
    )


@pytest.fixture
def jax_cache_config():
    """The compilation cache settings the test changes, restored after it."""
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
             "jax_persistent_cache_min_compile_time_secs")  # fmt: skip
    saved = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache every compile
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_the_compile_cache_directory_is_used_and_off_is_honoured(
    jax_cache_config, run, tmp_path, monkeypatch
):
    cache, elsewhere = tmp_path / "cache", tmp_path / "from-env"
    monkeypatch.setenv("SERES_COMPILE_CACHE", str(elsewhere))

    # Batch sizes no other test evaluates with: each is compiled here, not found in memory.
    def evaluate(batch_size: int, *flags: str) -> None:
        assert main(["eval", str(run), "--batch-size", str(batch_size), *flags]) == 0

    evaluate(97, "--compile-cache", str(cache))
    assert any(p.name.startswith("jit_eval_step-") for p in cache.iterdir())
    assert not elsewhere.exists()
    evaluate(98, "--compile-cache", "off")
    assert not jax.config.jax_enable_compilation_cache
    assert not elsewhere.exists()
    evaluate(99)  # the environment variable's
    assert any(p.name.startswith("jit_eval_step-") for p in elsewhere.iterdir())


def test_the_default_compile_cache_defers_to_the_env_then_to_jax(jax_cache_config, monkeypatch):
    from seres_jax.compiler import default_compile_cache

    monkeypatch.delenv("SERES_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    jax.config.update("jax_compilation_cache_dir", "/set-by-the-user")
    assert default_compile_cache() == "/set-by-the-user"
    monkeypatch.setenv("SERES_COMPILE_CACHE", "off")
    assert default_compile_cache() == "off"
    monkeypatch.delenv("SERES_COMPILE_CACHE")
    jax.config.update("jax_compilation_cache_dir", None)
    assert default_compile_cache() == "/xdg/seres/jax"


def test_a_run_opens_as_an_nnx_model(base_run):
    """``seres_jax.nnx.load`` reads a ``seres train`` work directory's latest checkpoint, as
    ``seres eval`` does, into the NNX model, bit for bit."""
    from seres_jax import nnx as snnx
    from seres_jax.convert import flax_to_state_dict
    from seres_jax.formats import load_checkpoint
    from seres_jax.registry import variables_template

    template = variables_template(FULL_ARCH)
    saved = load_checkpoint(base_run / "checkpoints", template=template).to_variables(template)
    model = snnx.load(base_run, FULL_ARCH)
    ours, theirs = flax_to_state_dict(snnx.to_linen(model)), flax_to_state_dict(saved)
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert int(ours["stem.1.num_batches_tracked"]) == 2  # the run's two steps, not a fresh model
