"""Shared set-up of the parity suite: precision policy, the JAX devices to test on, and what
runs without PyTorch.

Float32 comparisons run with ``jax_default_matmul_precision="highest"`` and TF32 off in torch
(see ``seres_jax.parity`` for the tolerance policy). Torch is optional: on an install without
it (``pip install -e ".[test]"``, as on a TPU VM) every test marked ``requires_torch`` skips
and the rest run; the torch-free half checks the layers against recorded PyTorch outputs
(``fixtures/torch_reference.safetensors``). The JAX side of every parity test runs
on each platform JAX offers: the CPU always, a GPU or TPU when present. Under pytest-xdist
(``-n 2``) each worker reports its worst errors to a file the controller merges.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# Workers share an accelerator: take GPU memory as needed, not 75 % each up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import pytest

from .helpers import HAVE_TORCH

jax.config.update("jax_default_matmul_precision", "highest")
# Many tests compile the same computation (same model, shapes and mode, other weights): a
# session-wide compilation cache compiles each once. Fresh per run unless
# SERES_TEST_COMPILE_CACHE names one (.ci/run shares one between its two runs); JAX keys the
# entries by jax version, backend and program, so a shared one does not go stale.
_CACHE = os.environ.get("SERES_TEST_COMPILE_CACHE") or tempfile.mkdtemp(prefix="seres-jax-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE)
# `seres` processes the tests start use it too, never the user's ~/.cache/seres/jax.
os.environ.setdefault("SERES_COMPILE_CACHE", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
if HAVE_TORCH:
    import torch

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
    if HAVE_TORCH:
        torch.manual_seed(0)


@pytest.fixture(params=_platform_devices(), ids=lambda d: d.platform)
def jax_device(request: pytest.FixtureRequest) -> jax.Device:
    """One device per JAX platform present (parity tests run on each)."""
    return request.param


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if HAVE_TORCH:
        return
    skip = pytest.mark.skip(reason="needs PyTorch, not installed here (pip install -e '.[dev]')")
    for item in items:
        if "requires_torch" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        os.environ["SERES_WORST_DIR"] = tempfile.mkdtemp(prefix="seres-worst-")


def pytest_sessionfinish(session: pytest.Session) -> None:
    from .helpers import WORST

    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if worker and WORST:
        Path(os.environ["SERES_WORST_DIR"], f"{worker}.json").write_text(json.dumps(WORST))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .helpers import WORST

    merged = {label: dict(kinds) for label, kinds in WORST.items()}
    for path in Path(os.environ.get("SERES_WORST_DIR", "")).glob("*.json"):
        for label, kinds in json.loads(path.read_text()).items():
            into = merged.setdefault(label, {})
            for kind, err in kinds.items():
                into[kind] = max(into.get(kind, 0.0), err)
    if not merged:
        return
    # .ci/run records these beside the test counts; the docs' figures are rendered from them.
    if record := os.environ.get("SERES_WORST_JSON"):
        Path(record).write_text(json.dumps(merged, indent=1, sort_keys=True))
    terminalreporter.section("worst parity errors (relative to the reference's max-abs)")
    for label, worst in sorted(merged.items()):
        cells = ", ".join(f"{kind} {err:.2e}" for kind, err in worst.items())
        terminalreporter.write_line(f"{label}: {cells}")
