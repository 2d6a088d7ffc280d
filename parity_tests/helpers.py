"""Test helpers: non-trivial BatchNorm state and seeded inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seres_jax.parity import FP32_TOL, ParityResult, Tolerance


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics, so eval mode
    is not the identity and a swapped mean/var or scale/bias cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(int(torch.randint(0, 1000, (), generator=gen)))
    return module


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
