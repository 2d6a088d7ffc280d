"""Checkpoint formats and ``seres convert``: bit-exact round trips through every format pair,
and safe failure on malicious, truncated, mismatched or existing files."""

from __future__ import annotations

import itertools
import os
import pickle

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from seres_cli.main import main
from seres_jax.convert import to_numpy
from seres_jax.formats import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    save_state_dict,
)

from .helpers import HAVE_TORCH, TORCH_REFERENCE

if HAVE_TORCH:
    import torch

ARCH = "seresnet_tiny:in_ch=1,base=8,n=1,reduction=4"
SUFFIXES = {"torch": ".pt", "safetensors": ".safetensors", "msgpack": ".msgpack", "orbax": ""}


def _state_dict(dtype=np.float32):
    """ARCH's PyTorch state_dict (randomised BatchNorm statistics, int64 batch counts) as
    recorded in numpy: every format but ``.pt`` is then tested without torch."""
    state = load_file(TORCH_REFERENCE)
    return {
        k.removeprefix("tiny/state/"): v.astype(dtype) if v.dtype.kind == "f" else v
        for k, v in state.items()
        if k.startswith("tiny/state/")
    }


def _tensors(state_dict):
    """A state_dict as torch.save writes it: tensors."""
    return {k: torch.from_numpy(v) for k, v in state_dict.items()}


def _bits(value) -> np.ndarray:
    array = to_numpy(value)
    return np.asarray(array).reshape(-1).view(np.uint8)


def _assert_bit_exact(state_dict, original):
    assert set(state_dict) == set(original)
    for key, value in original.items():
        got = to_numpy(state_dict[key])
        assert got.shape == tuple(value.shape), key
        assert got.dtype.name == str(value.dtype).removeprefix("torch."), key
        np.testing.assert_array_equal(_bits(got), _bits(value), err_msg=key)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        pytest.param(*pair, marks=pytest.mark.requires_torch if "torch" in pair else ())
        for pair in itertools.product(SUFFIXES, SUFFIXES)
    ],
)
def test_round_trip_through_every_format_pair_is_bit_exact(src, dst, tmp_path):
    original = _state_dict()
    a, b = tmp_path / f"a{SUFFIXES[src]}", tmp_path / f"b{SUFFIXES[dst]}"
    save_checkpoint(Checkpoint("state_dict", original, a), a)
    save_checkpoint(load_checkpoint(a), b)
    _assert_bit_exact(load_checkpoint(b).to_state_dict(), original)


@pytest.mark.requires_torch
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_survives_every_format(dtype, tmp_path):
    original = _state_dict(dtype)
    current = Checkpoint("state_dict", original, tmp_path)
    for i, suffix in enumerate([".pt", ".msgpack", "", ".pth"]):
        path = tmp_path / f"c{i}{suffix}"
        save_checkpoint(current, path)
        current = load_checkpoint(path)
    _assert_bit_exact(current.to_state_dict(), original)


def test_safetensors_round_trip_in_float16(tmp_path):
    original = _state_dict(np.float16)
    save_state_dict(original, tmp_path / "a.safetensors")
    _assert_bit_exact(load_checkpoint(tmp_path / "a.safetensors").to_state_dict(), original)


@pytest.mark.requires_torch
def test_bfloat16_numpy_arrays_are_written_as_torch_bfloat16(tmp_path):
    save_state_dict({"bn.weight": np.ones(3, ml_dtypes.bfloat16)}, tmp_path / "a.pt")
    assert torch.load(tmp_path / "a.pt", weights_only=True)["bn.weight"].dtype == torch.bfloat16


@pytest.mark.requires_torch
def test_wrapped_and_prefixed_state_dicts_are_unwrapped(tmp_path):
    original = _tensors(_state_dict())
    for wrapper in ("state_dict", "model"):
        path = tmp_path / f"{wrapper}.pt"
        torch.save({wrapper: {f"module.{k}": v for k, v in original.items()}, "epoch": 7}, path)
        _assert_bit_exact(load_checkpoint(path).to_state_dict(), original)


# --------------------------------------------------------------------------- seres convert


def _convert(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.requires_torch
def test_convert_cli_round_trip(tmp_path, capsys):
    original = _state_dict()
    torch.save({"state_dict": _tensors(original)}, tmp_path / "a.pt")
    assert _convert(capsys, tmp_path / "a.pt", tmp_path / "b.msgpack", "--arch", ARCH)[0] == 0
    assert _convert(capsys, tmp_path / "b.msgpack", tmp_path / "c", "--arch", ARCH)[0] == 0
    code, out, _ = _convert(capsys, tmp_path / "c", tmp_path / "d.safetensors")
    assert code == 0 and "(orbax) ->" in out
    assert _convert(capsys, tmp_path / "d.safetensors", tmp_path / "e.pth", "--arch", ARCH)[0] == 0
    _assert_bit_exact(torch.load(tmp_path / "e.pth", weights_only=True), original)


class _Exploit:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.requires_torch
@pytest.mark.parametrize("style", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_and_nothing_runs(style, tmp_path, capsys):
    marker, evil, dst = tmp_path / "pwned", tmp_path / "evil.pt", tmp_path / "out.safetensors"
    payload = {"fc.weight": torch.zeros(2, 2), "x": _Exploit(marker)}
    if style == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(_Exploit(marker)))
    code, _, err = _convert(capsys, evil, dst)
    assert code == 2
    assert err.startswith(f"seres: error: refused to load {evil}")
    assert "nothing was executed" in err
    assert not marker.exists()
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


@pytest.mark.parametrize(
    "suffix", [pytest.param(".pt", marks=pytest.mark.requires_torch), ".safetensors", ".msgpack"]
)
def test_truncated_files_give_a_clear_error(suffix, tmp_path, capsys):
    good, bad = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}"
    save_checkpoint(Checkpoint("state_dict", _state_dict(), good), good)
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    code, out, err = _convert(capsys, bad, tmp_path / "out.safetensors")
    assert code == 2 and out == ""
    assert err.startswith(f"seres: error: {bad}: not a readable") and err.count("\n") == 1
    assert not (tmp_path / "out.safetensors").exists()


def test_corrupt_orbax_directory_gives_a_clear_error(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(Checkpoint("state_dict", _state_dict(), ckpt), ckpt)
    for f in (ckpt / "d").iterdir():
        f.write_bytes(b"garbage")
    code, _, err = _convert(capsys, ckpt, tmp_path / "out.pt")
    assert code == 2 and "not a readable orbax checkpoint" in err
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.requires_torch
def test_wrong_arch_lists_every_problem_and_writes_nothing(tmp_path, capsys):
    sd = _tensors(_state_dict())
    del sd["stage1.0.se.fc.0.bias"]
    sd["extra.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "a.pt")
    code, _, err = _convert(
        capsys, tmp_path / "a.pt", tmp_path / "b.msgpack", "--arch",
        "seresnet_tiny:in_ch=1,base=8,n=1,reduction=4,num_classes=7",
    )  # fmt: skip
    assert code == 2
    assert "missing: 'stage1.0.se.fc.0.bias'" in err
    assert "unexpected: 'extra.weight'" in err
    assert "shape mismatch: 'fc.weight' is (10, 32), model expects (7, 32)" in err  # PyTorch's
    assert "shape mismatch: 'fc.bias'" in err
    assert not (tmp_path / "b.msgpack").exists()


@pytest.mark.requires_torch
def test_existing_destination_needs_force(tmp_path, capsys):
    original = _state_dict()
    torch.save(_tensors(original), tmp_path / "a.pt")
    dst = tmp_path / "b.safetensors"
    dst.write_bytes(b"precious")
    code, _, err = _convert(capsys, tmp_path / "a.pt", dst)
    assert code == 2 and "exists; pass --force" in err
    assert dst.read_bytes() == b"precious"
    assert _convert(capsys, tmp_path / "a.pt", dst, "--force")[0] == 0
    _assert_bit_exact(load_checkpoint(dst).to_state_dict(), original)
    # An orbax checkpoint is replaced whole, too.
    assert _convert(capsys, tmp_path / "a.pt", tmp_path / "c", "--arch", ARCH)[0] == 0
    assert _convert(capsys, dst, tmp_path / "c")[0] == 2
    assert _convert(capsys, dst, tmp_path / "c", "--force")[0] == 0
    _assert_bit_exact(load_checkpoint(tmp_path / "c").to_state_dict(), original)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_unknown_format_and_missing_source(tmp_path, capsys):
    code, _, err = _convert(capsys, tmp_path / "a.ckpt", tmp_path / "b.pt")
    assert code == 2 and "unknown checkpoint format '.ckpt'" in err
    code, _, err = _convert(capsys, tmp_path / "missing.pt", tmp_path / "b.msgpack")
    assert code == 2 and "no such file" in err
    with pytest.raises(CheckpointError, match="a state_dict is written as"):
        save_state_dict(_state_dict(), tmp_path / "x.msgpack")
