"""The work directory: the files a run writes there (``RUN_FILES``), when a run may use it
(resume, overwrite), and ``config.json``, the run described (``find_run_config``).

* **Work directory.** ``config.json`` (the run described: the ``TrainConfig``, the resolved
  architecture, the versions of seres, jax, flax and optax, the device count, the overrides
  of resumes; written before the first step), ``checkpoints/`` and ``metrics.jsonl`` (one
  line per epoch, rewritten atomically), and the command line's ``curves.png``
  (``RUN_FILES``). A directory holding them is a previous run: ``fit`` refuses it unless
  told to resume it or to overwrite it, which deletes those files, and nothing else, first.
  A resume whose config differs from ``config.json`` outside ``RESUMABLE_CHANGES`` is
  refused, every difference listed, unless ``override=True`` (recorded in the file).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax

from ..atomic import STAGING_MARK
from ..formats import atomic_path
from .config import RESUMABLE_CHANGES, TrainConfig
from .errors import TrainingError

CHECKPOINT_DIR = "checkpoints"
"""The run's checkpoints: the root of its orbax ``CheckpointManager`` (a directory per step)."""
METRICS_FILE = "metrics.jsonl"
"""The run's history, one JSON record per epoch, rewritten atomically (``read_metrics``)."""
CURVES_FILE = "curves.png"
"""The loss and accuracy curves the command line plots from ``METRICS_FILE``."""
CONFIG_FILE = "config.json"
"""The run described (see the module docstring), written before the first step; what a resume
is checked against and ``find_run_config`` reads."""
TENSORBOARD_DIR = "tensorboard"
"""The run's TensorBoard event files (``seres_jax.train.tensorboard``)."""
RUN_FILES = (CHECKPOINT_DIR, METRICS_FILE, CURVES_FILE, CONFIG_FILE, TENSORBOARD_DIR)
"""What a run writes in its work directory: a directory holding any of them holds a run, which
``fit`` continues or deletes (these, and nothing else) only when told to."""


logger = logging.getLogger(__name__)


def _is_run_file(path: Path) -> bool:
    # Also the staging directories of atomic writes a kill interrupted (not a user's
    # `.metrics.jsonl.bak`).
    return any(path.name == n or path.name.startswith(f".{n}{STAGING_MARK}") for n in RUN_FILES)


def _check_workdir(workdir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a work directory the run cannot use as asked; reads only."""
    if workdir.exists() and not workdir.is_dir():
        raise TrainingError(f"work directory {workdir} is not a directory")
    if resume and overwrite:
        raise TrainingError("resume and overwrite exclude each other")
    # An empty checkpoints/ (a run stopped before its first checkpoint) holds nothing to lose.
    used = [n for n in RUN_FILES if (workdir / n).is_file() or any((workdir / n).glob("*"))]
    if used and not (resume or overwrite):
        raise TrainingError(
            f"work directory {workdir} already holds a run ({', '.join(used)}): continue it "
            "with --resume or start again with --overwrite"
        )


def _clear_run(workdir: Path) -> None:
    """Delete what a previous run wrote in ``workdir``, and nothing else."""
    if jax.process_index() == 0 and workdir.is_dir():
        for path in filter(_is_run_file, workdir.iterdir()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    _sync("seres: previous run cleared")  # no process may see the directory half cleared


def _sync(name: str) -> None:
    """Wait for every process (after process 0 changed the shared work directory)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes: refuse a hostile giant


def _versions() -> dict[str, str]:
    from importlib import metadata

    def version(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {name: version(name) for name in ("seres", "jax", "jaxlib", "flax", "optax")}


def _read_run_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8") if path.stat().st_size <= _CONFIG_BYTES else ""
        record = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    # What it says feeds commands (eval, convert): each field must be one a run could have.
    try:
        stored = record["config"]
        TrainConfig.from_record(stored).validate(1)
        if not isinstance(record.get("arch"), str | None):
            raise TypeError
    except (TypeError, KeyError, AttributeError, TrainingError):
        raise TrainingError(f"{path}: not a run description of seres") from None
    return record


def find_run_config(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The ``config.json`` of the run that ``path`` belongs to (a work directory, its
    ``checkpoints/`` or a step directory in it) and its contents; ``None`` if there is none.

    The contents: ``config`` (the ``TrainConfig`` as a dict), ``arch`` (``run_arch``, or
    ``None``), ``versions``, ``device_count``, and ``overrides`` (each ``{"step", "changes":
    {field: [old, new]}}`` a resume with ``override=True`` made).
    """
    path = Path(path)
    candidates = [path]
    if path.name == CHECKPOINT_DIR:
        candidates.append(path.parent)
    elif path.parent.name == CHECKPOINT_DIR:
        candidates.append(path.parent.parent)
    for workdir in candidates:
        if path.is_dir() and (workdir / CONFIG_FILE).is_file():
            return workdir / CONFIG_FILE, _read_run_config(workdir / CONFIG_FILE)
    return None


def _recipe_changes(stored: dict[str, Any], config: TrainConfig) -> dict[str, list[Any]]:
    """``{field: [stored, new]}`` for each field outside ``RESUMABLE_CHANGES`` that differs
    (a field the stored file lacks, written by another seres, is not compared)."""
    new = json.loads(json.dumps(dataclasses.asdict(config)))
    return {
        name: [stored[name], value]
        for name, value in new.items()
        if name not in RESUMABLE_CHANGES and name in stored and stored[name] != value
    }


def _check_resumable(workdir: Path, config: TrainConfig, override: bool) -> dict[str, list[Any]]:
    """The recipe changes a resume of ``workdir`` makes; a ``TrainingError`` listing each of
    them unless ``override``. Reads only."""
    path = workdir / CONFIG_FILE
    if not path.is_file():
        if any((workdir / CHECKPOINT_DIR).glob("*")):
            logger.warning(
                "%s has no %s (a run of an earlier seres): resuming without checking that the "
                "model, dataset and recipe are the same", workdir, CONFIG_FILE,
            )  # fmt: skip
        return {}
    changes = _recipe_changes(_read_run_config(path)["config"], config)
    if changes and not override:
        listed = "; ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in changes.items())
        raise TrainingError(
            f"--resume: {path} differs from this command: {listed} (pass --override to resume "
            "with these changes)"
        )
    return changes


def _write_run_config(
    workdir: Path,
    config: TrainConfig,
    arch: str | None,
    changes: dict[str, list[Any]],
    step: int,
    initial: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Describe the run in ``config.json``: this config, the software, the devices, the
    overrides of earlier resumes plus this one's ``changes`` (taking effect at ``step``),
    where its starting weights came from (``initial``: kept from the file on a resume) and the
    preprocessing it trains and validates with (``data``: ``DataConfig`` fields)."""
    path = workdir / CONFIG_FILE
    stored = _read_run_config(path) if path.is_file() else {}
    overrides = stored.get("overrides", [])
    initial = initial if initial is not None else stored.get("initial")
    if changes:
        overrides = [*overrides, {"step": step, "changes": changes}]
    record = {
        "config": dataclasses.asdict(config),
        "arch": arch,
        "versions": _versions(),
        "device_count": jax.device_count(),
        "overrides": overrides,
    }
    if initial is not None:
        record["initial"] = initial
    if data is not None:
        record["data"] = data
    if jax.process_index() == 0:
        with atomic_path(path, force=True) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
