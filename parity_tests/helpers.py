"""Test helpers: non-trivial BatchNorm state and seeded inputs."""

from __future__ import annotations

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
