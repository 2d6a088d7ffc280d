"""Test helpers: seeded inputs, parity assertions, CIFAR-10 binary files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seres_jax.parity import FP32_TOL, ParityResult, Tolerance


def nchw_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# Worst error of each kind over the whole run, per tolerance class; printed by conftest.
WORST: dict[str, dict[str, float]] = {}


def assert_parity(result: ParityResult, tol: Tolerance = FP32_TOL, label: str = "fp32") -> None:
    worst = WORST.setdefault(label, {})
    for kind, err in result.worst().items():
        worst[kind] = max(worst.get(kind, 0.0), err)
    failures = result.failures(tol)
    assert not failures, "parity broken:\n" + "\n".join(failures)


RECORD = 3073  # CIFAR-10 binary: 1 label byte + 3 x 32 x 32 pixel bytes
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]


def cifar_records(rng: np.random.Generator, count: int, labels: Any = None) -> np.ndarray:
    """`count` CIFAR records as a (count, 3073) uint8 array."""
    records = rng.integers(0, 256, (count, RECORD), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 10, count) if labels is None else labels
    return records


def write_cifar10(
    directory: Path, train_records: int = 7, test_records: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes a tiny binary CIFAR-10 tree; returns the records written per file."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in TRAIN_FILES:
        written[name] = cifar_records(rng, train_records)
    written["test_batch.bin"] = cifar_records(rng, test_records)
    # A landmark: record 3 of data_batch_2, blue channel (2), row 5, col 7 -> 200.
    written["data_batch_2.bin"][3, 1 + 2 * 1024 + 5 * 32 + 7] = 200
    for name, records in written.items():
        records.tofile(directory / name)
    return written
