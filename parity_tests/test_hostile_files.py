"""Hostile and damaged checkpoints, and destinations seres must not destroy.

Every bad input is one ``seres: error:`` line (exit 2) and writes nothing; hostile files are
refused in bounded memory (peak RSS of a subprocess, measured); corruption is detected by
zip CRCs and seres' checksums; replacing a destination is crash-safe (real ``kill -9`` and
simulated crashes between the steps); and a fixed, seeded corpus of truncations, bit flips and
header mutations of every format ends in one error line or in an output equal to the original.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest

from seres_cli.main import main
from seres_jax import formats
from seres_jax.convert import to_numpy
from seres_jax.formats import (
    Checkpoint,
    CheckpointError,
    atomic_path,
    load_checkpoint,
    save_checkpoint,
    save_state_dict,
    save_variables,
)

from .helpers import HAVE_TORCH
from .test_formats import ARCH, SUFFIXES, _assert_bit_exact, _state_dict, _tensors

if HAVE_TORCH:
    import torch

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


@pytest.fixture(scope="module")
def state_dict():
    return _state_dict()


@pytest.fixture(scope="module")
def originals(tmp_path_factory, state_dict):
    """The state_dict written by seres in every format: ``{format: path}``."""
    folder = tmp_path_factory.mktemp("originals")
    paths = {name: folder / f"a{suffix}" for name, suffix in SUFFIXES.items()}
    for path in paths.values():
        save_checkpoint(Checkpoint("state_dict", state_dict, path), path)
    return paths


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_refused(result, message):
    assert result == (2, "", f"seres: error: {message}\n")


def _run_python(script, *args, stdin=None):
    """``python -c script args`` in the repository: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


# Runs `seres` in-process once per argv list (a JSON list on stdin), then prints the results
# ([exit status, stderr] per run) and the process's peak RSS: VmHWM, the high-water mark of
# its own memory since exec (a child's ru_maxrss would count the parent's memory it was
# forked with).
_RUN_ALL = """
import contextlib, io, json, re, sys, traceback
from seres_cli.main import main
results = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except BaseException:
            code = "escaped"
            err.write(traceback.format_exc())
    results.append([code, err.getvalue()])
status = open("/proc/self/status").read()
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status)[1]) * 1024
print(json.dumps({"results": results, "peak": peak}))
"""


def _run_all(argvs, preamble=""):
    """Every argv through ``seres`` in one subprocess: (results, its stderr, peak RSS)."""
    code, out, err = _run_python(preamble + _RUN_ALL, stdin=json.dumps(argvs))
    assert code == 0, err
    report = json.loads(out)
    return report["results"], err, report["peak"]


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if ".seres-" in p.name)


# --------------------------------------------------------------------------- destinations


@pytest.mark.requires_torch
def test_parity_json_never_replaces_a_directory(tmp_path, capsys, monkeypatch):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for target, force in ((keep, []), (keep, ["--force"]), (Path("."), [])):
        result = _cli(capsys, "parity", "--arch", ARCH, "--image-size", "8", "--json", target,
                      *force)  # fmt: skip
        _assert_refused(result, f"{target} is a directory; refusing to replace it with a file")
    assert (keep / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


class _Report:
    ok = True

    def format(self):
        return "a report"

    def to_dict(self):
        return {"ok": True}


@pytest.mark.requires_torch
def test_parity_replaces_an_existing_report_only_with_force(tmp_path, capsys, monkeypatch):
    import seres_jax.parity

    monkeypatch.setattr(seres_jax.parity, "parity_report", lambda *args, **kwargs: _Report())
    report = tmp_path / "report.json"
    report.write_text("old")
    argv = ["parity", "--arch", ARCH, "--image-size", "8", "--json", report]
    _assert_refused(_cli(capsys, *argv), f"{report} exists; pass --force to replace it")
    assert report.read_text() == "old"
    assert _cli(capsys, *argv, "--force") == (0, "a report\n", "")
    assert json.loads(report.read_text()) == {"ok": True}


@pytest.mark.requires_torch
def test_force_never_replaces_the_source_or_a_directory_holding_it(tmp_path, capsys, state_dict):
    proj = tmp_path / "proj"
    proj.mkdir()
    src = proj / "model.pt"
    torch.save(_tensors(state_dict), src)
    result = _cli(capsys, "convert", src, proj, "--force")
    _assert_refused(result, f"{proj} contains the source {src}; refusing to replace it")
    result = _cli(capsys, "convert", src, src, "--force")
    _assert_refused(result, f"{src} is the source {src}; refusing to replace it")
    with pytest.raises(CheckpointError, match="contains the source"):
        save_checkpoint(load_checkpoint(src), proj, force=True)
    _assert_bit_exact(torch.load(src, weights_only=True), state_dict)
    assert sorted(p.name for p in proj.iterdir()) == ["model.pt"]


@pytest.mark.requires_torch
def test_force_replaces_only_a_checkpoint_of_the_same_kind(tmp_path, capsys, originals, state_dict):
    src, plain, ckpt = originals["torch"], tmp_path / "plain", tmp_path / "ckpt"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    result = _cli(capsys, "convert", src, plain, "--force")
    _assert_refused(
        result, f"{plain} is a directory, not an orbax checkpoint; refusing to replace it"
    )
    variables = load_checkpoint(src).to_variables()
    with pytest.raises(CheckpointError, match="not an orbax checkpoint; refusing"):
        save_variables(variables, plain, force=True)
    (plain / "x.pt").mkdir()
    with pytest.raises(CheckpointError, match="is a directory; refusing to replace it with a file"):
        save_state_dict(load_checkpoint(src).data, plain / "x.pt", force=True)
    assert sorted(p.name for p in plain.iterdir()) == ["notes.txt", "x.pt"]

    assert _cli(capsys, "convert", src, ckpt)[0] == 0
    (ckpt / "notes.txt").write_text("mine")
    result = _cli(capsys, "convert", src, ckpt, "--force")
    _assert_refused(result, f"{ckpt} is an orbax checkpoint holding other files too (notes.txt); "
                    "refusing to replace it")  # fmt: skip
    (ckpt / "notes.txt").unlink()
    assert _cli(capsys, "convert", originals["msgpack"], ckpt, "--force")[0] == 0
    _assert_bit_exact(load_checkpoint(ckpt).to_state_dict(), state_dict)
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- crash safety

# Writes an orbax-like directory `dst` (holding d/data = "new") through formats.atomic_path,
# crashing (os._exit) at the step named by argv[2]:
#   "moved-away": right after the old destination was renamed away (the fallback path where
#                 renameat2's exchange is unavailable);
#   "exchanged":  right after the exchange;
#   "writing":    while the new directory is being written (then waits to be killed).
_CRASH = """
import os, sys, time
from pathlib import Path
from seres_jax import formats
dst, step = Path(sys.argv[1]), sys.argv[2]
rename = os.rename
def crash_after_moving_away(src, to):
    rename(src, to)
    if Path(src) == dst:
        os._exit(9)
os.rename = crash_after_moving_away
try:
    from seres_jax import atomic
    exchange = atomic._exchange
    def crash_after_exchange(a, b):
        exchange(a, b)
        os._exit(9)
    atomic._exchange = (lambda a, b: False) if step == "moved-away" else crash_after_exchange
except ImportError:  # a seres without seres_jax.atomic
    pass
with formats.atomic_path(dst, force=True, directory=True) as tmp:
    (tmp / "d").mkdir(parents=True)
    (tmp / "d" / "data").write_text("new")
    (tmp / "_CHECKPOINT_METADATA").write_text("{}")
    if step == "writing":
        print("writing", flush=True)
        time.sleep(60)
"""


def _old_checkpoint(folder):
    dst = folder / "dst"
    (dst / "d").mkdir(parents=True)
    (dst / "_CHECKPOINT_METADATA").write_text("{}")
    (dst / "d" / "data").write_text("old")
    return dst


@pytest.mark.parametrize(("step", "expected"), [("moved-away", "old"), ("exchanged", "new")])
def test_a_crash_while_replacing_a_directory_leaves_a_complete_one(tmp_path, step, expected):
    dst = _old_checkpoint(tmp_path)
    assert _run_python(_CRASH, dst, step)[0] == 9
    # The next write beside it (any write: here a report) finishes the crashed one's business.
    with atomic_path(tmp_path / "other.json") as tmp:
        tmp.write_text("{}")
    assert (dst / "d" / "data").read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "other.json"]


def test_a_failed_replace_puts_the_old_directory_back(tmp_path, monkeypatch):
    from seres_jax import atomic

    dst = _old_checkpoint(tmp_path)
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the fallback path
    rename = os.rename

    def failing(src, to):
        if Path(src).name == "dst" and Path(to) == dst:  # moving the new one in
            raise OSError(5, "Input/output error")
        rename(src, to)

    monkeypatch.setattr(os, "rename", failing)
    failure = pytest.raises(CheckpointError, match=f"^cannot write {dst}: Input/output error$")
    with failure, atomic_path(dst, force=True, directory=True) as tmp:
        (tmp / "d").mkdir(parents=True)
        (tmp / "_CHECKPOINT_METADATA").write_text("{}")
    assert (dst / "d" / "data").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


def test_kill_9_mid_write_keeps_the_destination_and_the_leftover_is_swept(tmp_path):
    from seres_jax import atomic

    dst = _old_checkpoint(tmp_path)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _CRASH, str(dst), "writing"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline() == "writing\n"
        staging = _leftovers(tmp_path)
        assert len(staging) == 2 and all(".dst.seres-staging-" in name for name in staging)
        os.kill(writers[0].pid, signal.SIGKILL)
        assert writers[0].wait() == -signal.SIGKILL
        assert (dst / "d" / "data").read_text() == "old"
        atomic.sweep(tmp_path)
        # The dead writer's staging directory is gone; the live one's is untouched.
        live = _leftovers(tmp_path)
        assert len(live) == 1 and live[0] in staging
        assert (tmp_path / live[0] / "dst" / "d" / "data").read_text() == "new"
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
            writer.stdout.close()
    atomic.sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
    assert (dst / "d" / "data").read_text() == "old"


# --------------------------------------------------------------------------- memory bombs


def _orbax_bomb(folder, original, elements):
    """``original`` (an orbax checkpoint) with params/fc/kernel re-declared as ``elements``
    zeros, written in compressed chunks: a few hundred KB claiming gigabytes."""
    import tensorstore as ts

    bomb = folder / "bomb"
    shutil.copytree(original, bomb)
    base = {"driver": "ocdbt", "base": f"file://{bomb.absolute()}/"}
    store = ts.KvStore.open(base).result()
    store.delete_range(ts.KvStore.KeyRange(b"params.fc.kernel/", b"params.fc.kernel0")).result()
    chunk = 4_000_000
    array = ts.open(
        {"driver": "zarr", "kvstore": base, "path": "params.fc.kernel"},
        create=True, dtype=ts.float32, shape=[elements],
        chunk_layout=ts.ChunkLayout(chunk_shape=[chunk]),
        codec=ts.CodecSpec({"driver": "zarr", "compressor": {"id": "zstd", "level": 1}}),
    ).result()  # fmt: skip
    zeros = np.zeros(chunk, np.float32)
    for start in range(0, elements, chunk):
        array[start : start + chunk].write(zeros).result()
    return bomb


def _bombs(folder, originals):
    """``{name: path}`` of small files declaring gigabytes of tensors."""
    paths = {name: folder / f"{name}.pt" for name in ("stride", "terabytes", "overlap")}
    torch.save({"fc.weight": torch.zeros(1).expand(500_000_000)}, paths["stride"])
    torch.save({"fc.weight": torch.zeros(1).expand(10**12)}, paths["terabytes"])
    shared = torch.zeros(250_000)  # 1 MB, viewed by 2000 entries: 2 GB once copied
    torch.save({f"m{i}.weight": shared for i in range(2000)}, paths["overlap"])

    header = json.dumps({"fc.weight": {"dtype": "F32", "shape": [500_000_000],
                                       "data_offsets": [0, 2_000_000_000]}}).encode()  # fmt: skip
    paths["safetensors"] = folder / "lie.safetensors"
    paths["safetensors"].write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    array = msgpack.ExtType(1, msgpack.packb(((500_000_000,), "float32", bytes(8))))
    paths["msgpack"] = folder / "lie.msgpack"
    paths["msgpack"].write_bytes(msgpack.packb({"params": {"fc": {"kernel": array}}}))
    paths["orbax"] = _orbax_bomb(folder, originals["orbax"], 400_000_000)
    return paths


@pytest.mark.requires_torch
def test_memory_bombs_are_refused_in_bounded_memory(tmp_path, originals):
    bombs = _bombs(tmp_path, originals)
    argvs = [
        ["convert", str(path), str(tmp_path / f"out_{name}{arch}.safetensors"), *arch]
        for name, path in bombs.items()
        for arch in ([], ["--arch", ARCH])
    ]
    results, stderr, peak = _run_all(argvs)
    print(f"memory bombs: peak RSS {peak / 2**20:.0f} MiB over {len(argvs)} conversions")
    assert peak < GIB, f"peak RSS {peak / 2**20:.0f} MiB"
    assert stderr == ""
    for argv, (code, err) in zip(argvs, results, strict=True):
        assert code == 2, (argv, err)
        assert err.startswith("seres: error: ") and err.count("seres: error:") == 1, err
        assert "Traceback" not in err
    messages = {name: results[2 * i][1] for i, name in enumerate(bombs)}
    storage = "entries that are not dense real floating-point tensors backed by their own data"
    assert messages["stride"] == (
        f"seres: error: {bombs['stride']}: {storage}: 'fc.weight' declares 500000000 elements "
        "(1.9 GiB) over 4 bytes of storage\n"
    )
    assert messages["terabytes"] == (
        f"seres: error: {bombs['terabytes']}: {storage}: 'fc.weight' declares 1000000000000 "
        "elements (3725.3 GiB) over 4 bytes of storage\n"
    )
    assert messages["overlap"] == (
        f"seres: error: {bombs['overlap']}: its tensors declare 1.9 GiB over 976.6 KiB of "
        "storage (views that overlap); refusing to expand them\n"
    )
    assert messages["orbax"].startswith(
        f"seres: error: {bombs['orbax']}: declares 1.5 GiB of tensors in "
    )
    assert "more than compression explains (at most 16x)" in messages["orbax"]
    with_arch = results[2 * list(bombs).index("orbax") + 1][1]
    assert "  - shape mismatch: params/fc/kernel is (400000000,), model expects (32, 10)" in (
        with_arch
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out_")]


# --------------------------------------------------------------------------- corruption


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _data_offset(path, array):
    """Where ``array``'s bytes sit in the file at ``path``."""
    offset = path.read_bytes().find(np.ascontiguousarray(array).tobytes())
    assert offset > 0
    return offset


@pytest.mark.requires_torch
@pytest.mark.parametrize("name", ["torch", "safetensors", "msgpack"])
def test_a_flipped_bit_in_tensor_data_is_detected(name, originals, state_dict, tmp_path, capsys):
    bad = tmp_path / originals[name].name
    shutil.copy(originals[name], bad)
    if name == "msgpack":
        shutil.copy(f"{originals[name]}.sha256", f"{bad}.sha256")
    weight = to_numpy(state_dict["stage1.0.conv1.conv.weight"])
    if name == "msgpack":  # stored in Flax's layout
        weight = weight.transpose(2, 3, 1, 0)
    _flip(bad, _data_offset(bad, weight) + 5)
    code, out, err = _cli(capsys, "convert", bad, tmp_path / "out.safetensors")
    assert (code, out) == (2, "")
    expected = {
        "torch": f"seres: error: {bad}: not a readable PyTorch checkpoint (BadZipFile: Bad CRC-32 "
        "for file 'archive/data/",
        "safetensors": f"seres: error: {bad}: corrupt: its tensors' SHA-256 is ",
        "msgpack": f"seres: error: {bad}: corrupt: its SHA-256 is ",
    }[name]
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.requires_torch
def test_a_corrupt_orbax_chunk_is_detected(originals, tmp_path, capsys):
    bad = tmp_path / "ckpt"
    shutil.copytree(originals["orbax"], bad)
    data = max((bad / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size)
    _flip(data, data.stat().st_size // 2)
    code, _, err = _cli(capsys, "convert", bad, tmp_path / "out.pt")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"seres: error: {bad}: corrupt: its tensors' SHA-256 is ") or (
        err.startswith(f"seres: error: {bad}: not a readable orbax checkpoint")
    ), err


@pytest.mark.requires_torch
def test_checksums_are_recorded_and_files_without_one_still_load(originals, state_dict, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(originals["safetensors"]), framework="numpy") as f:
        assert len(f.metadata()[formats.DIGEST_KEY]) == 64
    sidecar = Path(f"{originals['msgpack']}.sha256").read_text()
    assert sidecar.endswith("  a.msgpack\n") and len(sidecar.split()[0]) == 64
    # Written by other tools: no checksum, loaded as they are.
    arrays = {k: np.require(to_numpy(v), requirements="C") for k, v in state_dict.items()}
    save_file(arrays, tmp_path / "plain.safetensors")
    shutil.copy(originals["msgpack"], tmp_path / "plain.msgpack")
    for path in (tmp_path / "plain.safetensors", tmp_path / "plain.msgpack"):
        _assert_bit_exact(load_checkpoint(path).to_state_dict(), state_dict)


# --------------------------------------------------------------------------- not tensors


def _variables_msgpack(path, params):
    from flax.serialization import msgpack_serialize

    path.write_bytes(msgpack_serialize({"params": params}))


NOT_TENSORS = {
    "sparse.pt": (lambda p: torch.save({"fc.weight": torch.zeros(3, 3).to_sparse()}, p),
                  "entries that are not dense real floating-point tensors backed by their own "
                  "data: 'fc.weight' is a sparse_coo tensor"),
    "quantized.pt": (lambda p: torch.save({"fc.weight": torch.quantize_per_tensor(
                        torch.zeros(3, 3), 0.1, 0, torch.qint8)}, p),
                     "entries that are not dense real floating-point tensors backed by their "
                     "own data: 'fc.weight' has dtype qint8"),
    "meta.pt": (lambda p: torch.save({"fc.weight": torch.zeros(3, 3, device="meta")}, p),
                "entries that are not dense real floating-point tensors backed by their own "
                "data: 'fc.weight' is a meta tensor, without data"),
    "complex.pt": (lambda p: torch.save({"fc.weight": torch.zeros(3, 3, dtype=torch.complex64)}, p),
                   "entries that are not dense real floating-point tensors backed by their own "
                   "data: 'fc.weight' has dtype complex64"),
    "intkey.pt": (lambda p: torch.save({1: torch.zeros(3)}, p), "keys that are not strings: 1"),
    "tuplekey.pt": (lambda p: torch.save({("fc", "weight"): torch.zeros(3)}, p),
                    "keys that are not strings: ('fc', 'weight')"),
    "empty.pt": (lambda p: torch.save({}, p), "expected a state_dict (a dict of tensors)"),
    "empty.safetensors": (lambda p: p.write_bytes(struct.pack("<Q", 8) + b"{}      "),
                          "holds no tensors"),
    "complex.safetensors": (
        lambda p: p.write_bytes(struct.pack("<Q", 72) + json.dumps(
            {"fc.weight": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}
        ).encode().ljust(72) + bytes(8)),
        "entries that are not real floating-point (or integer counter) tensors: "
        "'fc.weight' (C64)"),
    "intkey.msgpack": (lambda p: _variables_msgpack(p, {1: {"bias": np.zeros(3, np.float32)}}),
                       "not Flax variables: key 1 in params is not a string"),
    "scalar.msgpack": (lambda p: _variables_msgpack(p, {"fc": {"bias": 1.5}}),
                       "not Flax variables: params/fc/bias is a float, not an array"),
    "empty.msgpack": (lambda p: _variables_msgpack(p, {"fc": {}}), "holds no tensors"),
    "array.msgpack": (lambda p: _variables_msgpack(p, np.zeros(3, np.float32)),
                      "not Flax variables: params is a ndarray"),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # making one
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.requires_torch) if n.endswith(".pt") else n
        for n in sorted(NOT_TENSORS)
    ],
)
def test_what_is_not_a_dense_real_tensor_is_refused_in_one_line(name, tmp_path, capsys):
    make, message = NOT_TENSORS[name]
    src = tmp_path / name
    make(src)
    for arch in ([], ["--arch", ARCH]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would be more than one line
            result = _cli(capsys, "convert", src, tmp_path / "out.msgpack", *arch)
        _assert_refused(result, f"{src}: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# --------------------------------------------------------------------------- write failures

# Every output format on a "full disk": file sizes capped (RLIMIT_FSIZE, SIGXFSZ ignored, so
# writes fail with EFBIG), as a quota or a full disk would make them fail.
_FULL_DISK = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
"""


@pytest.mark.requires_torch
def test_a_full_disk_is_one_line_and_leaves_nothing(originals, tmp_path):
    outputs = [tmp_path / f"out{suffix}" for suffix in SUFFIXES.values()]
    argvs = [["convert", str(originals["torch"]), str(out)] for out in outputs]
    results, stderr, _ = _run_all(argvs, preamble=_FULL_DISK)
    assert stderr == ""
    for out, (code, err) in zip(outputs, results, strict=True):
        assert (code, err) == (2, f"seres: error: cannot write {out}: File too large\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.requires_torch
def test_an_unwritable_destination_is_one_line(originals, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _cli(capsys, "convert", originals["torch"], blocker / "out.pt")
    _assert_refused(result, f"cannot write {blocker / 'out.pt'}: {blocker} is not a directory")

    def read_only(path, mode=0o777):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "mkdir", read_only)
    for suffix in SUFFIXES.values():
        out = tmp_path / f"out{suffix}"
        result = _cli(capsys, "convert", originals["torch"], out)
        _assert_refused(result, f"cannot write {out}: Permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.requires_torch
def test_problems_are_listed_once_in_the_files_own_names_and_layout(originals, tmp_path, capsys):
    def refusal(src, dst):
        code, _, err = _cli(capsys, "convert", src, tmp_path / dst, "--arch", ARCH)
        assert code == 2
        return err

    sd = load_checkpoint(originals["safetensors"]).data
    save_state_dict({**sd, "fc.weight": np.zeros((32, 10), np.float32)}, tmp_path / "t.safetensors")
    assert refusal(tmp_path / "t.safetensors", "out.msgpack") == (
        f"seres: error: checking {tmp_path / 't.safetensors'} against {ARCH} failed with 1 "
        "problem(s):\n"
        "  - shape mismatch: 'fc.weight' is (32, 10), model expects (10, 32)\n"
    )
    save_state_dict({**sd, "head.0.num_batches_tracked": np.array(2**40)}, tmp_path / "n.pt")
    assert refusal(tmp_path / "n.pt", "out.msgpack") == (
        f"seres: error: checking {tmp_path / 'n.pt'} against {ARCH} failed with 1 problem(s):\n"
        "  - 'head.0.num_batches_tracked': num_batches_tracked=1099511627776 does not fit in "
        "int32\n"
    )
    variables = load_checkpoint(originals["msgpack"]).data
    variables["params"]["fc"]["kernel"] = np.zeros((10, 32), np.float32)
    del variables["params"]["fc"]["bias"]
    variables["batch_stats"]["head_0"]["num_batches_tracked"] = np.array(2**40)
    save_variables(variables, tmp_path / "v.msgpack")
    assert refusal(tmp_path / "v.msgpack", "out.pt") == (
        f"seres: error: checking {tmp_path / 'v.msgpack'} against {ARCH} failed with 3 "
        "problem(s):\n"
        "  - batch_stats/head_0/num_batches_tracked: num_batches_tracked=1099511627776 does not "
        "fit in int32\n"
        "  - missing: params/fc/bias (model expects (10,) float32)\n"
        "  - shape mismatch: params/fc/kernel is (10, 32), model expects (32, 10)\n"
    )


# --------------------------------------------------------------------------- fuzzing

_TRUNCATIONS = (0.0, 0.05, 0.3, 0.6, 0.9, 0.999)


def _files(path):
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() else [path]


def _safetensors_header_mutations(path):
    """Rewritten headers: its length, and the first tensor's shape, dtype and offsets, and the
    checksum changed."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8 : 8 + size]), data[8 + size :]
    first = next(k for k in header if k != "__metadata__")

    def rewrite(change):
        mutated = json.loads(json.dumps(header))
        change(mutated, mutated[first])
        text = json.dumps(mutated).encode()
        return struct.pack("<Q", len(text)) + text + body

    changes = {
        "shape x1000": lambda h, e: e.update(shape=[d * 1000 for d in e["shape"]]),
        "dtype C64": lambda h, e: e.update(dtype="C64"),
        "dtype BOOL": lambda h, e: e.update(dtype="BOOL"),
        "offset +4": lambda h, e: e["data_offsets"].append(e["data_offsets"].pop() + 4),
        "no checksum": lambda h, e: h.pop("__metadata__"),
        "other checksum": lambda h, e: h["__metadata__"].update({formats.DIGEST_KEY: "0" * 64}),
    }  # fmt: skip
    lengths = {"length 0": 0, "length 2**40": 2**40, "length = file": len(data)}
    return [(label, struct.pack("<Q", n) + data[8:]) for label, n in lengths.items()] + [
        (label, rewrite(change)) for label, change in changes.items()
    ]


def _fuzz_cases(folder, originals, flips):
    """A fixed, seeded corpus: ``[(description, path, may_differ)]``; ``may_differ`` marks
    the only damage allowed to convert into different tensors: a ``.msgpack`` without its
    ``.sha256`` (nothing records what its data should be)."""
    rng = np.random.default_rng(20240607)
    cases = []

    def case(label, name, mutate, may_differ=False):
        path = folder / f"{len(cases):03d}{SUFFIXES[name]}"
        if originals[name].is_dir():
            shutil.copytree(originals[name], path)
        else:
            shutil.copy(originals[name], path)
            if name == "msgpack" and not may_differ:
                shutil.copy(f"{originals[name]}.sha256", f"{path}.sha256")
        mutate(path)
        cases.append((f"{name}: {label}", path, may_differ))

    def truncate(fraction, pick):
        def mutate(path):
            target = _files(path)[pick]
            target.write_bytes(target.read_bytes()[: int(target.stat().st_size * fraction)])

        return mutate

    def flip(pick, position):
        def mutate(path):
            target = _files(path)[pick]
            _flip(target, int(position * target.stat().st_size))

        return mutate

    def replace(data):
        return lambda path: path.write_bytes(data)

    for name, original in originals.items():
        count = len(_files(original))
        for fraction in _TRUNCATIONS:
            pick = int(rng.integers(count))
            case(f"truncated to {fraction:.1%} ({pick})", name, truncate(fraction, pick))
        for _ in range(flips):
            pick, position = int(rng.integers(count)), float(rng.random())
            case(f"bit flip at {position:.4f} ({pick})", name, flip(pick, position))
    data = originals["torch"].read_bytes()
    case("no local header", "torch", replace(b"\0" * 4 + data[4:]))
    case("no end of central directory", "torch", replace(data[:-22] + b"\0" * 22))
    for label, mutated in _safetensors_header_mutations(originals["safetensors"]):
        case(label, "safetensors", replace(mutated))
    data = originals["msgpack"].read_bytes()
    case("an array, not a map", "msgpack", replace(b"\x91" + data[1:]))
    for position in (0.3, 0.6, 0.9):
        case(f"bit flip at {position} without .sha256", "msgpack", flip(0, position), True)
    return cases


@pytest.mark.requires_torch
@pytest.mark.parametrize("flips", [10, pytest.param(200, marks=pytest.mark.slow)])
def test_fuzzed_files_give_one_error_line_or_the_original_tensors(
    flips, tmp_path, originals, state_dict
):
    cases = _fuzz_cases(tmp_path, originals, flips)
    argvs, outputs = [], []
    for i, (_, path, _) in enumerate(cases):
        for j, arch in enumerate(([], ["--arch", ARCH])):
            out = tmp_path / "out" / f"{i:03d}_{j}{list(SUFFIXES.values())[(i + j) % 4]}"
            argvs.append(["convert", str(path), str(out), *arch])
            outputs.append(out)
    start = time.perf_counter()
    results, stderr, peak = _run_all(argvs)
    print(f"fuzz: {len(cases)} files, {len(argvs)} conversions in "
          f"{time.perf_counter() - start:.1f} s, peak RSS {peak / 2**20:.0f} MiB")  # fmt: skip
    assert peak < GIB
    assert stderr == ""
    succeeded = 0
    for (label, _, may_differ), argv, out, (code, err) in zip(
        [c for c in cases for _ in range(2)], argvs, outputs, results, strict=True
    ):
        what = f"{label}: {' '.join(argv[3:])} -> {code}\n{err}"
        assert code in (0, 2), what
        if code == 2:
            assert err.startswith("seres: error: "), what
            assert err.count("seres: error:") == 1 and "Traceback" not in err, what
            assert not out.exists(), what
            continue
        succeeded += 1
        converted = load_checkpoint(out).to_state_dict()
        if not may_differ:
            _assert_bit_exact(converted, state_dict)
    print(f"fuzz: {succeeded} conversions succeeded, {len(argvs) - succeeded} refused")
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "out") == []
