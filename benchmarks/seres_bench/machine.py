"""The machine the benchmark ran on: CPU model, cores, memory, OS, load average, and the library
versions from the installed metadata (the parent process imports neither framework)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Library versions from the installed metadata (the parent imports neither framework)."""
    found = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "flax", "optax", "torch", "numpy"):
        found[package] = _version(package)
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cmd = ["sysctl", "-n", "machdep.cpu.brand_string"]
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """The host: CPU model, core counts, memory, OS (accelerators are added by the workers)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(ValueError, OSError, AttributeError):
        info["memory_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    return info
