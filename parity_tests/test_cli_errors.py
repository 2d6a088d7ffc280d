"""Bad architecture strings and bad ``seres parity`` flags: one ``seres: error:`` line, exit 2,
nothing written, whichever command reads them."""

from __future__ import annotations

import re

import numpy as np
import pytest

from seres_cli.main import main
from seres_jax.registry import RegistryError, model_config

FOUR = "must be 4 positive integers joined by '-', e.g."  # stage widths and depths
BAD_ARCHS = [
    ("seresnet_tiny:base=abc", "base must be an integer, got 'abc'"),
    ("seresnet_tiny:base=0", "base must be a positive integer, got 0"),
    ("seresnet_tiny:n=-2", "n must be a positive integer, got -2"),
    ("seresnet_tiny:base=2.5", "base must be an integer, got 2.5"),
    ("seresnet_tiny:preact=1", "preact must be true or false, got 1"),
    ("seresnet_tiny:attn=foo", "attn must be one of se, eca, none, got 'foo'"),
    ("seresnet50:block=wide", "block must be one of basic, bottleneck, got 'wide'"),
    ("seresnet50:layers=3", f"layers {FOUR} 3-4-6-3, got 3"),
    ("seresnet50:layers=1-1-1", f"layers {FOUR} 3-4-6-3, got (1, 1, 1)"),
    ("seresnet18:channels=8-16-0-64", f"channels {FOUR} 64-128-256-512, got (8, 16, 0, 64)"),
    ("seresnet50:num_classes=true", "num_classes must be an integer, got True"),
]


@pytest.mark.parametrize(("arch", "message"), BAD_ARCHS)
def test_bad_arch_arguments_are_named(arch, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        model_config(arch)


def test_overrides_of_the_right_type_are_accepted():
    _, arguments = model_config("seresnet_tiny:base=8,n=1,preact=true,attn=none,in_ch=1")
    assert arguments["base"] == 8 and arguments["preact"] is True and arguments["attn"] == "none"
    _, arguments = model_config("seresnet50:attn=eca,block=basic")
    assert arguments["block"] == "basic"
    _, arguments = model_config("seresnet18:layers=1-1-1-1,channels=8-16-32-64")
    assert arguments["layers"] == (1, 1, 1, 1) and arguments["channels"] == (8, 16, 32, 64)


# Strings that parse but make a width round down to nothing or split unevenly into groups:
# PyTorch would build zero-channel layers without a word, Flax fail deep inside ``init``.
UNBUILDABLE = [
    "legacy_seresnet18:channels=8-16-32-64",  # SE squeeze 8 // 16 = 0
    "seresnext26d_32x4d:channels=8-16-32-64",  # floor(8 * 4 / 64) = 0 channels per group
    "legacy_senet154:channels=16-32-64-128",  # 32 channels in 64 groups
]
WIDTHS = "cannot be built: widths must be positive multiples of the groups"


@pytest.mark.parametrize("arch", UNBUILDABLE)
def test_an_unbuildable_arch_is_refused_by_name(arch):
    from seres_jax.registry import variables_template

    with pytest.raises(RegistryError, match=re.escape(f"{arch} {WIDTHS}")):
        variables_template(arch)


@pytest.mark.requires_torch
@pytest.mark.parametrize("arch", UNBUILDABLE)
def test_the_torch_twin_refuses_it_too(arch):
    from seres_jax.registry import build_torch

    with pytest.raises(RegistryError, match=re.escape(f"{arch} cannot be built: ")):
        build_torch(arch)


@pytest.mark.requires_torch
def test_a_zero_width_torch_layer_is_named():
    from seres_torch.senet import create_model

    with pytest.raises(ValueError, match=re.escape("layer1.0.se_module.fc1 (8 -> 0 channels")):
        create_model("legacy_seresnet18", channels=(8, 16, 32, 64))


def _assert_one_error_line(capsys, code, message):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("seres: error: "), err
    assert message in lines[0]
    assert "\x1b[" not in err


@pytest.mark.parametrize(("arch", "message"), [*BAD_ARCHS[:2], (UNBUILDABLE[0], WIDTHS)])
@pytest.mark.parametrize("command", ["train", "convert", "parity"])
def test_every_command_reports_a_bad_arch_in_one_line(command, arch, message, tmp_path, capsys):
    src = tmp_path / "missing.safetensors"
    argv = {
        "train": [
            "train",
            "--dataset",
            "synthetic",
            "--model",
            arch,
            "--workdir",
            str(tmp_path / "w"),
        ],
        "convert": ["convert", str(src), str(tmp_path / "out.msgpack"), "--arch", arch],
        "parity": ["parity", "--arch", arch, "--json", str(tmp_path / "r.json")],
    }[command]
    _assert_one_error_line(capsys, main(argv), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
        (["--image-size", "-3"], "argument --image-size: must be a positive integer, got -3"),
        (["--batch-size", "x"], "argument --batch-size: must be a positive integer, got 'x'"),
        (["--seed", "-1"], "argument --seed: must be a non-negative integer, got -1"),
    ],
)
def test_bad_parity_flags_are_one_line(flags, message, tmp_path, capsys):
    code = main(["parity", "--arch", "seresnet_tiny", "--json", str(tmp_path / "r.json"), *flags])
    _assert_one_error_line(capsys, code, message)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["key", "path"])
def test_control_characters_never_reach_the_terminal(where, tmp_path, capsys):
    # A hostile key could recolour or rewrite the user's terminal when it is named in an error.
    from safetensors.numpy import save_file

    evil = "\x1b[2J\x1b[31m"
    src = tmp_path / (f"{evil}.safetensors" if where == "path" else "evil.safetensors")
    if where == "key":
        save_file({f"stem.0.{evil}weight": np.zeros((8, 1, 3, 3), np.float32)}, str(src))
    code = main(["convert", str(src), str(tmp_path / "out.msgpack"), "--arch", "seresnet_tiny"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("seres: error: ")
    assert "\x1b" not in err and "\\x1b[2J" in err
    assert not (tmp_path / "out.msgpack").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        (["--seed", "-1"], "argument --seed: must be a non-negative integer, got -1"),
    ],
)
def test_bad_demo_flags_are_one_line(flags, message, tmp_path, capsys):
    code = main(["demo", "--workdir", str(tmp_path / "w"), "--no-progress", *flags])
    _assert_one_error_line(capsys, code, message)
    assert not any(tmp_path.iterdir())


def test_a_key_cannot_forge_an_error_line(tmp_path, capsys):
    from flax.serialization import msgpack_serialize

    src = tmp_path / "evil.msgpack"
    forged = {"stem_0\nseres: error: all good": {"kernel": np.zeros((3, 3, 1, 8), np.float32)}}
    src.write_bytes(msgpack_serialize({"params": forged}))
    code = main(["convert", str(src), str(tmp_path / "out.msgpack"), "--arch", "seresnet_tiny"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2
    assert [line for line in lines if line.startswith("seres: error: ")] == lines[:1], lines
    assert all(line.startswith("  - ") for line in lines[1:]), lines


@pytest.mark.requires_torch  # without torch, demo stops before it looks at the workdir
def test_demo_keeps_an_earlier_run_unless_told_to_overwrite(tmp_path, capsys):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "seresnet_tiny_digits.safetensors").write_bytes(b"an earlier export")
    code = main(["demo", "--workdir", str(workdir), "--epochs", "1", "--no-progress"])
    _assert_one_error_line(capsys, code, "pass --overwrite to replace it")
    assert [p.name for p in workdir.iterdir()] == ["seresnet_tiny_digits.safetensors"]
    assert (workdir / "seresnet_tiny_digits.safetensors").read_bytes() == b"an earlier export"


@pytest.mark.parametrize("command", ["convert", "parity"])
def test_a_file_without_a_checkpoint_suffix_is_one_line(command, tmp_path, capsys):
    src = tmp_path / "weights"  # no suffix: read as orbax, which is a directory
    src.write_bytes(b"\x00" * 64)
    argv = {
        "convert": ["convert", str(src), str(tmp_path / "out.pt")],
        "parity": ["parity", str(src), "--arch", "seresnet_tiny"],
    }[command]
    _assert_one_error_line(capsys, main(argv), f"{src}: a file without a checkpoint suffix")
    assert [p.name for p in tmp_path.iterdir()] == ["weights"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert", "{tmp}/a.pt", "{tmp}/b.msgpack"], "a.pt: .pt and .pth files need PyTorch"),
        (["convert", "{tmp}/a.msgpack", "{tmp}/b.pt"], "b.pt: .pt and .pth files need PyTorch"),
        (
            ["parity", "--arch", "seresnet_tiny"],
            "seres parity runs PyTorch, which is not installed",
        ),
        (["demo", "--no-progress"], "seres demo runs PyTorch, which is not installed"),
    ],
)
def test_without_torch_its_commands_say_so_in_one_line(
    argv, message, tmp_path, monkeypatch, capsys
):
    import sys

    from flax.serialization import msgpack_serialize

    (tmp_path / "a.pt").write_bytes(b"PK\x03\x04")  # never opened: torch is checked first
    (tmp_path / "a.msgpack").write_bytes(
        msgpack_serialize({"params": {"fc": {"bias": np.ones(2)}}})
    )
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as without it
    code = main([a.format(tmp=tmp_path) for a in argv])
    _assert_one_error_line(capsys, code, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.msgpack", "a.pt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "{tmp}/missing"], "{tmp}/missing: no such file or directory"),
        (
            ["train", "--workdir", "{tmp}/w", "--compile-cache", "{tmp}/file"],
            "--compile-cache {tmp}/file: not a directory",
        ),
    ],
)
def test_eval_and_compile_cache_name_what_is_wrong(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    code = main([a.format(tmp=tmp_path) for a in argv])
    _assert_one_error_line(capsys, code, message.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert (tmp_path / "file").read_text() == "mine"
