"""Multi-process training launched the plain way: ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on every process, as the README says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from seres_cli.main import main

TRAIN = [
    "train",
    "--dataset",
    "synthetic",
    "--model",
    "seresnet_tiny:base=8,n=1",
    "--batch-size",
    "16",
    "--max-steps",
    "2",
    "--no-progress",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seres(env: dict[str, str], *args: str) -> subprocess.Popen:
    code = "import sys; from seres_cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *TRAIN, *args],
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_processes_on_localhost_train_like_one(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        _seres(
            {
                "JAX_COORDINATOR_ADDRESS": address,
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
            "--export",
            str(tmp_path / f"p{i}.safetensors"),
        )
        for i in range(2)
    ]
    single = _seres({}, "--export", str(tmp_path / "single.safetensors"))
    for proc in (*procs, single):
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out
    p0, p1, one = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("p0", "p1", "single"))
    assert p0.keys() == p1.keys() == one.keys()
    moved = 0.0
    for key, value in one.items():
        # The state is replicated: both processes hold the very same weights.
        np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
        # BatchNorm's statistics span the global batch, split over the two processes.
        scale = max(float(np.max(np.abs(value))), 1e-12)
        assert float(np.max(np.abs(p0[key] - value))) / scale < 1e-5, key
        moved = max(moved, float(np.max(np.abs(p0[key] - value))))
    assert moved < 1e-4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}, "JAX_NUM_PROCESSES and JAX_PROCESS_ID"),
        (
            {
                "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1",
                "JAX_NUM_PROCESSES": "two",
                "JAX_PROCESS_ID": "0",
            },
            "must be integers",
        ),
        (
            {
                "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "2",
            },
            "need 0 <= JAX_PROCESS_ID < JAX_NUM_PROCESSES, got 2 and 2",
        ),
    ],
)
def test_an_incomplete_launch_is_one_line(env, message, monkeypatch, tmp_path, capsys):
    for name in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main([*TRAIN, "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("seres: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "w").exists()
