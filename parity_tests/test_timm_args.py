"""``seres train -c args.yaml``, ``--recipe`` and ``--print-config`` against timm's train.py:
the table's keys, defaults and types equal the parser recorded from timm's train.py
(``fixtures/record_timm_args.py``), ``args.yaml`` files written by timm's own code map as timm
ran them (its per-device batch made seres' global one), command-line flags win over the file as
in timm (checked against timm reading the file itself), the file wins over a recipe, settings
seres lacks are refused together in one line, unknown keys warn once, and every hostile file is
one ``seres: error:`` line with no work directory made. Needs neither timm nor torch."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import pytest
import yaml

from seres_cli import train as train_command
from seres_cli.main import _parser, main
from seres_cli.recipes import RECIPES
from seres_cli.timm_args import MAX_BYTES, TIMM_KEYS, batch_note, resolve

from .helpers import cpu_devices_env

FIXTURES = Path(__file__).parent / "fixtures"
FILES = FIXTURES / "timm_args"
RECORD = json.loads((FIXTURES / "timm_train_args.json").read_text())
TIMM = RECORD["train_py"]["head"]["keys"]
OLD = RECORD["train_py"]["v0.9.16"]["keys"]
DEVICES = jax.device_count()


def printed(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """``seres train ARGV --print-config``'s JSON."""
    code = main(["train", *argv, "--print-config"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)  # type: ignore[no-any-return]


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str], workdir: Path) -> str:
    """Run ``seres train ARGV --workdir WORKDIR``: exit 2, one ``seres: error:`` line, no
    work directory."""
    code = main(["train", *argv, "--workdir", str(workdir)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("seres: error: "), err
    assert not workdir.exists()
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "args.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the table


def _kind(recorded: dict[str, Any]) -> str:
    """The table's kind of a recorded argparse action."""
    if recorded["action"] == "store_true":
        return "bool"
    if recorded["action"] == "kwargs":
        return "kwargs"
    base = recorded["type"] or "str"
    return (
        base + "s"
        if recorded["nargs"] in ("+", "*") or isinstance(recorded["nargs"], int)
        else base
    )


def test_the_table_has_every_key_of_timms_train_py_in_its_order():
    assert list(TIMM_KEYS) == list(TIMM)


@pytest.mark.parametrize("key", list(TIMM))
def test_the_table_default_and_type_are_timms(key):
    spec, recorded = TIMM_KEYS[key], TIMM[key]
    assert spec.default == recorded["default"]
    assert type(spec.default) is type(recorded["default"])
    assert spec.kind == _kind(recorded)


def test_every_mapped_dest_is_a_seres_train_flag():
    train = next(
        a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["train"]
    dests = {a.dest for a in train._actions}
    mapped = {spec.dest for spec in TIMM_KEYS.values() if spec.status == "mapped"}
    seres_only = {key for recipe in RECIPES.values() for key in recipe.seres}
    assert mapped | seres_only <= dests
    for spec in TIMM_KEYS.values():
        assert (spec.dest is not None) == (spec.status == "mapped")
        assert spec.needs is None or spec.needs in TIMM_KEYS
        assert spec.status == "mapped" or spec.why  # the table says why


def test_the_table_counts():
    counts = {status: 0 for status in ("mapped", "irrelevant", "refused")}
    for spec in TIMM_KEYS.values():
        counts[spec.status] += 1
    assert counts == {"mapped": 74, "irrelevant": 38, "refused": 60}
    assert set(OLD) - set(TIMM) == {"amp_impl"}  # v0.9.16's key the table lacks
    assert len(set(TIMM) - set(OLD)) == 33  # and the table's keys that v0.9.16 lacks


# --------------------------------------------------------------------------- recorded files


@pytest.mark.parametrize("name", sorted(p.name for p in FILES.glob("*.yaml")))
def test_every_recorded_file_is_timms_parser_dumped(name):
    values = yaml.safe_load((FILES / name).read_text())
    version = RECORD["files"][name]["train_py"]
    assert set(values) == set(RECORD["train_py"][version]["keys"])


def test_an_a1_style_file_maps_as_timm_ran_it(capsys):
    out = printed(capsys, "-c", str(FILES / "head_rsb_a1.yaml"))
    config = out["config"]
    expected = {
        "model": "seresnet50", "dataset": "imagefolder", "data_dir": "tiny_imagenet",
        "epochs": 3, "optimizer": "lamb", "lr": 0.005, "sched": "cosine", "warmup_epochs": 1,
        "weight_decay": 0.01, "label_smoothing": 0.1, "drop_path": 0.05, "drop": 0.0,
        "aug_repeats": 3, "aa": "rand-m7-mstd0.5-inc1", "mixup": 0.2, "cutmix": 1.0,
        "mix_prob": 1.0, "bce_loss": True, "bce_target_thresh": 0.2, "precision": "bf16",
        "image_size": 224, "crop_pct": 0.95, "interpolation": None, "reprob": 0.0,
        "color_jitter": 0.0, "grayscale_prob": 0.0, "train_interpolation": "random",
        "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3], "seed": 0, "workers": 2,
        "grad_accum_steps": 2, "batch_size": 32 * DEVICES * 2, "augment": True,
        "model_ema": False, "lr_base_scale": None,
    }  # fmt: skip
    assert {key: config[key] for key in expected} == expected
    assert out["batch"] == {
        "per_update": 64 * DEVICES, "devices": DEVICES, "grad_accum_steps": 2, "per_device": 32,
        "note": batch_note(str(FILES / "head_rsb_a1.yaml"), 32, DEVICES, 2),
    }  # fmt: skip


def test_an_a3_style_file_maps_as_timm_ran_it(capsys):
    config = printed(capsys, "-c", str(FILES / "head_rsb_a3.yaml"))["config"]
    assert config["image_size"] == 160 and config["lr"] == 0.008
    assert config["aa"] == "rand-m6-mstd0.5-inc1" and config["label_smoothing"] == 0.0
    assert config["drop_path"] is None and config["aug_repeats"] == 0 and config["mixup"] == 0.1


def test_timms_defaults_map_to_timms_run(capsys):
    # timm's default model, resnet50, is no seres model: the usual validation refuses it.
    line = one_error(capsys, ["-c", str(FILES / "head_default.yaml")], Path("/nonexistent/w"))
    assert "unknown architecture 'resnet50'" in line
    config = printed(capsys, "-c", str(FILES / "head_default.yaml"), "--model", "seresnet50")[
        "config"
    ]
    # lr: timm's lr_base 0.1 scaled linearly for sgd by the global batch over 256.
    assert config["lr"] == pytest.approx(0.1 * 128 * DEVICES / 256)
    expected = {
        "optimizer": "sgd", "weight_decay": 2e-5, "label_smoothing": 0.1, "color_jitter": 0.4,
        "epochs": 300, "warmup_epochs": 5, "warmup_lr": 1e-5, "min_lr": 0, "seed": 42,
        "workers": 4, "sched": "cosine", "precision": "fp32", "batch_size": 128 * DEVICES,
        "lr_base": 0.1, "hflip": 0.5, "eval_metric": "top1", "model_ema_decay": 0.9998,
        "decay_milestones": [90, 180, 270], "image_size": None, "crop_pct": None,
    }  # fmt: skip
    assert {key: config[key] for key in expected} == expected


def test_a_zero_dropout_on_a_model_without_dropout_is_that_model(capsys):
    argv = ["-c", str(FILES / "head_default.yaml"), "--model", "seresnet_tiny"]
    assert printed(capsys, *argv)["config"]["drop"] is None


def test_an_older_timms_file_warns_once_and_runs_as_the_newer_ones(capsys):
    old = printed(capsys, "-c", str(FILES / "v0.9.16_rsb_a1.yaml"))
    # v0.9.16's amp_impl is not in the table: one warning line names it.
    code = main(["train", "-c", str(FILES / "v0.9.16_rsb_a1.yaml"), "--print-config"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert code == 0 and len(warnings) == 1 and warnings[0].endswith(": amp_impl")
    new = printed(capsys, "-c", str(FILES / "head_rsb_a1.yaml"))
    # The 33 keys v0.9.16 lacks take timm's defaults, as HEAD's file holds them.
    assert old["config"] == new["config"]


def test_flags_win_over_the_file_as_in_timm(capsys):
    # head_override.yaml is timm's own reading of `-c head_rsb_a1.yaml --epochs 5 --lr 0.001
    # --mixup 0.3`.
    ours = printed(capsys, "-c", str(FILES / "head_rsb_a1.yaml"), *RECORD["files"][
        "head_override.yaml"]["argv"][2:])  # fmt: skip
    timms = printed(capsys, "-c", str(FILES / "head_override.yaml"))
    assert ours["config"] == timms["config"]
    assert (ours["config"]["epochs"], ours["config"]["lr"], ours["config"]["mixup"]) == (
        5,
        0.001,
        0.3,
    )


def test_a_global_batch_flag_wins_over_the_files_per_device_one(capsys):
    out = printed(capsys, "-c", str(FILES / "head_rsb_a1.yaml"), "-b", "16")
    assert out["config"]["batch_size"] == 16 and out["batch"]["note"] is None


@pytest.mark.parametrize("devices", [1, 8])
def test_the_per_device_batch_times_the_devices_and_accumulation(devices):
    timm = resolve(FILES / "head_rsb_a1.yaml", None)
    fields = {"batch_size": None, "grad_accum_steps": 2}
    note = train_command._timm_batch(argparse.Namespace(timm=timm), fields, devices)
    assert fields["batch_size"] == 32 * devices * 2
    path = FILES / "head_rsb_a1.yaml"
    plural = "device" if devices == 1 else "devices"
    assert note == (f"seres: {path} batch_size 32 is per device: 32 x {devices} {plural} x 2 "
                    f"accumulation steps = batch {64 * devices} per update")  # fmt: skip


def test_eight_devices_end_to_end():
    """A child process on 8 virtual CPU devices: the file's 32 per device make 512 per update."""
    proc = subprocess.run(
        [sys.executable, "-m", "seres_cli.main", "train", "-c", str(FILES / "head_rsb_a1.yaml"),
         "--print-config"],
        capture_output=True, text=True, env=cpu_devices_env(8), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["config"]["batch_size"] == 512 and out["batch"]["devices"] == 8
    assert out["batch"]["note"].endswith("32 x 8 devices x 2 accumulation steps = batch 512 per "
                                         "update")  # fmt: skip


# --------------------------------------------------------------------------- recipes


def test_print_config_without_timm_is_seres_defaults(tmp_path, capsys):
    out = printed(capsys, "--workdir", str(tmp_path / "run"))
    assert out["config"]["model"] == "seresnet_tiny" and out["config"]["batch_size"] == 128
    assert out["config"]["lr"] == 0.1 and out["batch"]["note"] is None
    assert not (tmp_path / "run").exists()


def test_rsb_a1_print_config(tmp_path, capsys):
    out = printed(capsys, "--recipe", "rsb-a1", "--workdir", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing written, no data read
    config = out["config"]
    expected = {
        "model": "seresnet50", "dataset": "imagefolder", "image_size": 224, "epochs": 600,
        "batch_size": 2048, "optimizer": "lamb", "lr": 0.005, "sched": "cosine",
        "weight_decay": 0.01, "warmup_epochs": 5, "label_smoothing": 0.1, "drop": 0.0,
        "drop_path": 0.05, "aug_repeats": 3, "clip_grad": None, "hflip": 0.5,
        "aa": "rand-m7-mstd0.5-inc1", "mixup": 0.2, "cutmix": 1.0, "reprob": 0.0,
        "color_jitter": 0.0, "model_ema": False, "crop_pct": 0.95, "bce_loss": True,
        "bce_target_thresh": 0.2, "precision": "bf16", "val_image_size": None,
    }  # fmt: skip
    assert {key: config[key] for key in expected} == expected
    assert out["batch"]["per_update"] == 2048 and out["batch"]["note"] is None


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("rsb-a2", {"epochs": 300, "lr": 0.005, "weight_decay": 0.02, "label_smoothing": 0.0,
                    "mixup": 0.1, "drop_path": 0.05, "aug_repeats": 3, "image_size": 224}),
        ("rsb-a3", {"epochs": 100, "lr": 0.008, "weight_decay": 0.02, "label_smoothing": 0.0,
                    "mixup": 0.1, "drop_path": None, "aug_repeats": 0, "image_size": 160,
                    "val_image_size": 224, "aa": "rand-m6-mstd0.5-inc1"}),
    ],
)  # fmt: skip
def test_the_other_recipes(capsys, name, values):
    config = printed(capsys, "--recipe", name)["config"]
    assert {key: config[key] for key in values} == values


def test_the_file_wins_over_the_recipe_and_flags_over_both(tmp_path, capsys):
    partial = write(tmp_path, "epochs: 7\naa: rand-m9-mstd0.5\n")
    config = printed(capsys, "--recipe", "rsb-a3", "-c", str(partial))["config"]
    assert (config["epochs"], config["aa"]) == (7, "rand-m9-mstd0.5")  # the file's
    assert (config["image_size"], config["lr"], config["batch_size"]) == (160, 0.008, 2048)
    config = printed(capsys, "--recipe", "rsb-a3", "-c", str(partial), "--epochs", "9")["config"]
    assert config["epochs"] == 9
    # A whole args.yaml replaces the recipe, its per-device batch too.
    out = printed(capsys, "--recipe", "rsb-a3", "-c", str(FILES / "head_rsb_a1.yaml"))
    assert out["config"]["image_size"] == 224 and out["config"]["batch_size"] == 64 * DEVICES


def test_help_states_the_precedence(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "built-in defaults < --recipe < -c args.yaml < command-line flags" in " ".join(
        capsys.readouterr().out.split()
    )


# --------------------------------------------------------------------------- refusals


def test_every_refused_setting_is_named_in_one_line(tmp_path, capsys):
    line = one_error(capsys, ["-c", str(FILES / "head_refused.yaml")], tmp_path / "run")
    for item in ("drop_block=0.1", "aug_splits=3", "jsd_loss=True", "mixup_mode='elem'",
                 "lr_noise=[0.4, 0.9]", "mean=[0.5, 0.5, 0.5]"):  # fmt: skip
        assert item in line, item
    assert str(FILES / "head_refused.yaml") in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('epochs: "many"\n', "epochs must be an integer, got 'many'"),
        ("lr: true\n", "lr must be a number or null, got True"),
        ("scale: 0.5\n", "scale must be a list of numbers, got 0.5"),
        ("model_kwargs: [1]\n", "model_kwargs must be a mapping, got [1]"),
        ("val_split: test\n", "val_split='test' (seres reads ROOT/val"),
        ("input_size: [1, 64, 64]\n", "input_size=[1, 64, 64]: seres trains 3-channel square"),
        ("dataset: hfds/imagenet\n", "dataset='hfds/imagenet': seres reads image folders only"),
        ("amp: true\namp_dtype: float8\n", "amp_dtype='float8': timm takes float16 or bfloat16"),
        ("batch_size: 0\n", "batch_size must be >= 1, got 0"),
        ('epochs: "many"\ndrop_block: 0.1\n', "epochs must be an integer, got 'many'; seres "
         "does not implement (only timm's default passes): drop_block=0.1 (DropBlock)"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line(tmp_path, capsys, text, message):
    path = write(tmp_path, "model: seresnet50\n" + text)
    line = one_error(capsys, ["-c", str(path)], tmp_path / "run")
    assert f"{path}: " in line and message in line


@pytest.mark.parametrize(
    ("text", "config"),
    [
        ("naflex_max_seq_len: 100\nkd_temperature: 1.0\n", {}),  # inert without their switch
        ("val_split: val\nin_chans: 3\ngp: avg\n", {}),  # the same run
        ("data: elsewhere\n", {"data_dir": "elsewhere"}),
        ("img_size: 224\ninput_size: [3, 192, 192]\n", {"image_size": 192}),  # timm's order
        ("amp: true\namp_dtype: bfloat16\nlr: 0\n", {"precision": "bf16", "lr": 0.05 * DEVICES}),
        ("interpolation: bilinear\ntrain_interpolation: ''\n",
         {"interpolation": "bilinear", "train_interpolation": None}),
    ],
)  # fmt: skip
def test_values_that_map(tmp_path, capsys, text, config):
    path = write(tmp_path, "model: seresnet50\n" + text)
    printed_config = printed(capsys, "-c", str(path))["config"]
    assert {key: printed_config[key] for key in config} == config


def test_unknown_keys_are_one_warning(tmp_path, capsys):
    path = write(tmp_path, "model: seresnet50\nfuture_flag: 1\nevil\u202ekey: 2\n")
    code = main(["train", "-c", str(path), "--print-config"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and len(err) == 1 and err[0].startswith("seres: warning: ")
    assert "2 key(s)" in err[0] and "future_flag" in err[0] and "evil\\u202ekey" in err[0]
    assert "\u202e" not in err[0]


# --------------------------------------------------------------------------- hostile files


def _bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


HOSTILE: list[tuple[str, Any, str]] = [
    ("missing", None, "no such file"),
    ("directory", "dir", "is a directory"),
    ("fifo", "fifo", "not a regular file"),
    ("oversized", "sparse", f"bytes; an args.yaml is at most {MAX_BYTES}"),
    ("not utf-8", b"epochs: 3\n\xff\xfe\n", "not UTF-8 text"),
    ("not yaml", "epochs: [1, 2\n", "not valid YAML"),
    ("control character", "epochs: 3\x07\n", "not valid YAML"),
    ("python tag", "epochs: !!python/object/apply:os.system ['echo pwned']\n",
     "YAML tags are not allowed"),
    ("str tag", "epochs: !!str 3\n", "YAML tags are not allowed"),
    ("anchor", "epochs: &e 3\n", "YAML anchors and aliases are not allowed"),
    ("alias bomb", _bomb(), "YAML anchors and aliases are not allowed"),
    ("two documents", "epochs: 3\n---\nepochs: 4\n", "more than one YAML document"),
    ("deep", "model_kwargs: " + "[" * 200 + "]" * 200 + "\n", "nested more than 8 deep"),
    ("list", "- epochs\n- 3\n", "is a list, not a mapping"),
    ("scalar", "epochs\n", "is a str, not a mapping"),
    ("empty", "", "is empty, not a mapping"),
    ("integer key", "1: 2\n", "keys must be strings (timm's argument names), got 1"),
    ("null key", "null: 2\n", "keys must be strings (timm's argument names), got None"),
    ("unhashable key", "? [a, b]\n: 1\n", "not valid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "content", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_file_is_one_line_and_no_workdir(tmp_path, capsys, case, content, message):
    path = tmp_path / "args.yaml"
    if content == "dir":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)  # reading it would block: it must not be opened
    elif content == "sparse":
        with open(path, "wb") as f:
            f.truncate(16 << 30)  # 16 GiB of nothing: refused from its size, never read
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    line = one_error(capsys, ["-c", str(path)], tmp_path / "run")
    assert f"-c {path}: " in line and message in line
