"""TensorBoard event files of a run, in ``WORKDIR/tensorboard/`` (``TENSORBOARD_DIR``):
``TensorBoardLog`` turns ``fit``'s log records into scalars at their optimizer step, and
``write_from_metrics`` rebuilds the per-epoch ones of a run from its ``metrics.jsonl``.

Written with TensorBoard's own record writer and protocol buffers (the ``tensorboard``
package, imported when a log is opened), neither TensorFlow nor torch.

* **Tags.** A ``"progress"`` record gives ``train/loss``, ``train/acc``, ``train/lr`` and
  ``train/images_per_s`` (the logging window's); an ``"epoch"`` record ``train_epoch/loss``,
  ``train_epoch/acc``, ``val/loss``, ``val/top1``, ``val/top5``, with the model EMA
  ``ema_val/loss``, ``ema_val/top1``, ``ema_val/top5``, and ``time/elapsed_s`` and
  ``time/epoch`` (epochs completed). Any other number in a record goes to
  ``<kind>/<field>``; ``kind``, ``step`` and non-numbers (bools included) are not scalars.
  Non-finite values are written as they are: TensorBoard shows them, and a curve should
  show a divergence rather than hide it.
* **Resumes.** Each file starts with a ``SessionLog.START`` event at the first step its run
  may write (``start_step`` + 1, or 0 for a run starting at step 0, which may log step 0
  again: the initial weights' evaluation): TensorBoard drops every point an earlier file
  holds at that step or later, so a run killed after logging past its last checkpoint
  shows each step once, with the values of the resumed run. TensorBoard's Python loaders
  (``EventAccumulator``, and the server's with ``--load_fast=false``) drop them at that
  event, for every tag (the server's ignores a directory's first such event: hence one in
  every file); its Rust one (``--load_fast``) drops a tag's stale points when the resumed
  run writes that tag again (a stale ``val/`` point shows until the next evaluation).
* **Files.** Each log opens a new file, named as TensorBoard's writers name theirs (time,
  host, process, a counter), never replacing one. TensorBoard reads a directory's files in
  the order of their names: the order written, for files opened a second apart or more (a
  resume's are) or by one process (its counter is zero-padded).
* **Errors.** Each record is written and flushed to the file system by ``write``, which
  raises a failure (a full disk) as its ``OSError``, as the run's other files do: no
  thread, no queue, nothing a killed process can lose. One process of a multi-process run
  writes the log.
"""

from __future__ import annotations

import importlib.util
import itertools
import numbers
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeGuard

from .errors import TrainingError
from .metrics import read_metrics
from .workdir import TENSORBOARD_DIR

# (kind of record, field) -> tag. Accuracies are named top1/top5 as timm's summaries do.
TAGS: dict[tuple[str, str], str] = {
    ("progress", "loss"): "train/loss",
    ("progress", "acc"): "train/acc",
    ("progress", "lr"): "train/lr",
    ("progress", "images_per_s"): "train/images_per_s",
    ("epoch", "train_loss"): "train_epoch/loss",
    ("epoch", "train_acc"): "train_epoch/acc",
    ("epoch", "val_loss"): "val/loss",
    ("epoch", "val_acc"): "val/top1",
    ("epoch", "val_acc5"): "val/top5",
    ("epoch", "ema_val_loss"): "ema_val/loss",
    ("epoch", "ema_val_acc"): "ema_val/top1",
    ("epoch", "ema_val_acc5"): "ema_val/top5",
    ("epoch", "elapsed_s"): "time/elapsed_s",
    # The evaluation of the initial weights, before the first step: where val/ starts.
    ("initial", "val_loss"): "val/loss",
    ("initial", "val_acc"): "val/top1",
    ("initial", "val_acc5"): "val/top5",
}
# Part of each file's name: files one process opens within a second stay apart, in order.
_file_numbers = itertools.count()


def require_tensorboard() -> None:
    """Raise a ``TrainingError`` saying how to install it if ``tensorboard`` is missing (a
    run asked to log there checks it before writing anything)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise TrainingError(
            "TensorBoard logs need the tensorboard package: pip install tensorboard"
        )


def _is_step(value: object, least: int) -> TypeGuard[int]:
    return (
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= least
    )


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars ``TensorBoardLog.write`` makes of ``record``: ``{tag: value}``."""
    kind = str(record.get("kind", "epoch"))  # metrics.jsonl holds epoch records only
    values = {}
    for field, value in record.items():
        # What the record is and its x-axis; a progress record's epoch is the step's coarse
        # twin, the initial record's -1 (an epoch record's is written as time/epoch, from 1).
        if field in ("kind", "step") or (field == "epoch" and kind != "epoch"):
            continue
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if (kind, field) == ("epoch", "epoch"):
                values["time/epoch"] = float(value) + 1
            else:
                values[TAGS.get((kind, field), f"{kind}/{field}")] = float(value)
    return values


class TensorBoardLog:
    """Scalars of a run's log records in a new TensorBoard event file in ``directory``
    (created if missing). ``start_step``: the step the run starts from, 0 or the step of the
    checkpoint it resumed; TensorBoard drops the points earlier files hold past it (see the
    module docstring). Close it, or use it as a context manager."""

    def __init__(self, directory: str | os.PathLike[str], *, start_step: int = 0) -> None:
        require_tensorboard()
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        if not _is_step(start_step, 0):
            raise TrainingError(f"start_step must be a step >= 0, got {start_step!r}")
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_file_numbers):06d}"
        )
        self.path = self.directory / name
        # "x": a name already there (another host's clock, a copied directory) is an error,
        # never a file truncated.
        self._file = open(self.path, "xb")  # noqa: SIM115 (closed by close())
        self._records = RecordWriter(self._file)
        try:
            self._put(self._event(wall_time=time.time(), file_version="brain.Event:2"))
            # Steps up to a resumed checkpoint's were logged by the run that wrote it.
            purge = start_step + 1 if start_step else 0
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._put(self._event(wall_time=time.time(), step=purge, session_log=start))
        except BaseException:
            self._file.close()
            raise

    def write(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` (``fit``'s ``on_log`` record, a ``metrics.jsonl`` line) as the
        scalars ``scalars(record)`` at its ``step``, in one event."""
        step = record.get("step")
        if not _is_step(step, 0):
            raise TrainingError(f"a log record needs a step >= 0, got {step!r} in {record!r}")
        values = [self._summary.Value(tag=t, simple_value=v) for t, v in scalars(record).items()]
        if values:
            summary = self._summary(value=values)
            self._put(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def _put(self, event: Any) -> None:
        self._records.write(event.SerializeToString())
        # One write call a record, seen by a TensorBoard reading the run as it trains.
        self._file.flush()

    def close(self) -> None:
        """Close the file (again: nothing)."""
        self._file.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def write_from_metrics(
    workdir: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None
) -> Path:
    """Write the per-epoch scalars of the run in ``workdir`` (its ``metrics.jsonl``; the
    progress records are not kept there) to a new event file in ``directory`` (default:
    ``workdir/tensorboard``), which must hold no event file yet; returns the file's path."""
    directory = Path(workdir) / TENSORBOARD_DIR if directory is None else Path(directory)
    records = read_metrics(workdir)
    if not records:
        raise TrainingError(f"{workdir} holds no metrics.jsonl records")
    if directory.is_dir() and any(p.is_file() for p in directory.glob("*tfevents*")):
        raise TrainingError(f"{directory} already holds TensorBoard event files")
    with TensorBoardLog(directory) as log:
        for record in records:
            log.write(record)
    return log.path
