"""Shared set-up of the parity suite: precision policy and the JAX devices to test on.

Float32 comparisons run with ``jax_default_matmul_precision="highest"`` and TF32 off in torch
(see ``seres_jax.parity`` for the tolerance policy). The JAX side of every parity test runs
on each platform JAX offers: the CPU always, a GPU or TPU when present.
"""

from __future__ import annotations

import tempfile

import jax
import pytest

torch = pytest.importorskip("torch", reason="the parity suite compares against PyTorch")

jax.config.update("jax_default_matmul_precision", "highest")
# Many tests compile the same computation (same model, shapes and mode, other weights): a
# session-wide compilation cache compiles each once. Fresh per run, so nothing goes stale.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="seres-jax-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def _platform_devices() -> list[jax.Device]:
    devices = {d.platform: d for d in reversed(jax.devices("cpu"))}
    for backend in ("gpu", "tpu"):
        try:
            devices.setdefault(backend, jax.devices(backend)[0])
        except RuntimeError:
            continue
    return list(devices.values())


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Torch modules draw their initial weights from the global RNG: make each test's fixed."""
    torch.manual_seed(0)


@pytest.fixture(params=_platform_devices(), ids=lambda d: d.platform)
def jax_device(request: pytest.FixtureRequest) -> jax.Device:
    """One device per JAX platform present (parity tests run on each)."""
    return request.param


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .helpers import WORST

    if not WORST:
        return
    terminalreporter.section("worst parity errors (relative to the reference's max-abs)")
    for label, worst in sorted(WORST.items()):
        cells = ", ".join(f"{kind} {err:.2e}" for kind, err in worst.items())
        terminalreporter.write_line(f"{label}: {cells}")
