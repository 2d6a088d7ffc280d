"""A pytest plugin for the accelerator check's parity stage (``benchmarks/accelerator_check.py``
loads it with ``-p seres_bench.accel_pytest``); inert unless its environment variables say:

* ``SERES_ACCEL_SUMMARY=PATH``: the outcome counts, failures, skipped modules and the worst
  parity errors (``parity_tests.helpers.WORST``) as JSON, written when the session ends.
* Every test module is imported before pytest collects it; one that cannot be imported for want
  of a package (grain, hypothesis, timm, ...) is left out with one line, not a collection error.
* ``SERES_ACCEL_ONLY_ACCELERATOR=1``: the ``jax_device`` cases on the CPU are deselected when
  JAX also has a GPU or TPU, so every parity case runs its JAX side on the accelerator.
* ``SERES_ACCEL_TORCH_DEVICE=cuda``: the PyTorch side of ``seres_jax.parity.compare_modules``
  (the reference of most parity cases) runs on that device: the module is moved there and a
  torch-function mode moves the CPU tensors it meets to the device and fetches tensors back for
  ``.numpy()``. The gates are unchanged, so the run shows how far GPU PyTorch is from the CPU
  reference on them.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

SUMMARY_ENV = "SERES_ACCEL_SUMMARY"
ONLY_ACCELERATOR_ENV = "SERES_ACCEL_ONLY_ACCELERATOR"
TORCH_DEVICE_ENV = "SERES_ACCEL_TORCH_DEVICE"

_outcomes: Counter[str] = Counter()
_failed: list[str] = []
_left_out: dict[str, str] = {}
_deselected: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    device = os.environ.get(TORCH_DEVICE_ENV)
    if device:
        _torch_reference_on(device)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A test module whose imports fail for want of a package is left out, with its reason."""
    if not (collection_path.suffix == ".py" and collection_path.name.startswith("test_")):
        return None
    # pytest asks about every module of a package it collects from, named or not: only the
    # modules the command line names are imported here.
    named = {Path(config.invocation_params.dir, a.split("::")[0]).resolve() for a in config.args}
    if collection_path.resolve() not in named:
        return None
    name = f"{collection_path.parent.name}.{collection_path.stem}"
    try:
        importlib.import_module(name)
    except pytest.skip.Exception:
        return None  # a module-level skip: pytest reports it when it collects the module
    except ImportError as err:
        _left_out[str(collection_path.relative_to(config.rootpath))] = f"{err}"
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ONLY_ACCELERATOR_ENV) != "1":
        return
    import jax

    if jax.default_backend() == "cpu":
        return  # no accelerator: the CPU cases are the only ones
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        device = params.get("jax_device")
        (drop if device is not None and device.platform == "cpu" else keep).append(item)
    if drop:
        _deselected.extend(item.nodeid for item in drop)
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        outcome = report.outcome if report.when == "call" else f"{report.outcome} ({report.when})"
        if report.when != "call" and report.outcome == "skipped":
            outcome = "skipped"
        _outcomes[outcome] += 1
        if report.outcome == "failed":
            _failed.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for path, reason in sorted(_left_out.items()):
        terminalreporter.write_line(f"left out {path}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return
    try:
        from parity_tests.helpers import WORST
    except ImportError:
        WORST = {}  # noqa: N806
    summary = {
        "exitstatus": int(exitstatus),
        "outcomes": dict(_outcomes),
        "failed": _failed,
        "left_out": _left_out,
        "deselected_cpu_cases": len(_deselected),
        "worst": WORST,
        "torch_device": os.environ.get(TORCH_DEVICE_ENV) or "cpu",
    }
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")


def _torch_reference_on(device_name: str) -> None:
    """``seres_jax.parity``'s PyTorch side run on ``device_name`` (see the module docstring)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves, tree_map

    from seres_jax import parity

    device = torch.device(device_name)
    original = parity._torch_side

    def to_device(a: Any) -> Any:
        is_cpu = isinstance(a, torch.Tensor) and a.device.type == "cpu"
        return a.to(device) if is_cpu else a

    class OnDevice(TorchFunctionMode):
        # The mode is off while this runs, so the calls below are not intercepted again.
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func is torch.Tensor.numpy and args[0].device.type != "cpu":
                return func(args[0].cpu(), *args[1:], **kwargs)
            tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
            kinds = {t.device.type for t in tensors}
            if device.type in kinds and "cpu" in kinds and device.type != "cpu":
                args, kwargs = tree_map(to_device, (args, kwargs))
            return func(*args, **kwargs)

    def torch_side_on_device(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        moved = copy.deepcopy(module).to(device)
        with OnDevice():
            return original(moved, *args, **kwargs)

    parity._torch_side = torch_side_on_device
