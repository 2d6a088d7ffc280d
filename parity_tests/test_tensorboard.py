"""TensorBoard event files of runs (``seres_jax.train.tensorboard``), read back with
TensorBoard's own loaders: the Python ``EventAccumulator`` and the plugin accumulator that
``tensorboard --load_fast=false`` serves from. Tags, steps and values of records shaped as
``fit``'s; a resumed run's stale points purged; non-finite values kept; write errors raised.
"""

from __future__ import annotations

import errno
import json
import math

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from seres_jax.train import TrainingError
from seres_jax.train.tensorboard import TensorBoardLog, scalars, write_from_metrics


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as the Python ``EventAccumulator`` reads it."""
    reader = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0})
    reader.Reload()
    return {
        tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]
    }


def _served(directory) -> dict[str, list[tuple[int, float]]]:
    """The same from the accumulator TensorBoard's server uses (simple values migrated to
    tensors by ``data_compat``)."""
    reader = plugin_event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0})
    reader.Reload()
    return {
        tag: [
            (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in reader.Tensors(tag)
        ]
        for tag in reader.Tags()["tensors"]
    }


READERS = [_scalars, _served]


def _progress(step: int, loss: float) -> dict:
    return {"kind": "progress", "loss": loss, "acc": 0.25, "images_per_s": 1234.5,
            "epoch": (step - 1) // 5, "step": step, "lr": 0.1 / step}  # fmt: skip


def _epoch(epoch: int, step: int, *, ema: bool = False) -> dict:
    record = {"kind": "epoch", "epoch": epoch, "step": step, "train_loss": 2.5 - epoch,
              "train_acc": 0.1 * epoch, "val_loss": 2.25 - epoch, "val_acc": 0.3,
              "val_acc5": 0.75, "elapsed_s": 12.5 * (epoch + 1)}  # fmt: skip
    if ema:
        record.update(ema_val_loss=2.0, ema_val_acc=0.35, ema_val_acc5=0.8)
    return record


@pytest.mark.parametrize("read", READERS)
def test_records_become_scalars_at_their_step(tmp_path, read):
    records = [_progress(2, 2.75), _progress(4, 2.5), _progress(5, 2.25), _epoch(0, 5, ema=True)]
    records[1]["grad_norm"] = np.float32(3.5)  # a field the table does not know
    with TensorBoardLog(tmp_path) as log:
        for record in records:
            log.write(record)
    found = read(tmp_path)
    f32 = lambda v: float(np.float32(v))  # noqa: E731 (simple values are float32)
    assert found == {
        "train/loss": [(2, 2.75), (4, 2.5), (5, 2.25)],
        "train/acc": [(2, 0.25), (4, 0.25), (5, 0.25)],
        "train/lr": [(2, f32(0.05)), (4, f32(0.025)), (5, f32(0.02))],
        "train/images_per_s": [(2, 1234.5), (4, 1234.5), (5, 1234.5)],
        "progress/grad_norm": [(4, 3.5)],
        "train_epoch/loss": [(5, 2.5)],
        "train_epoch/acc": [(5, 0.0)],
        "val/loss": [(5, 2.25)],
        "val/top1": [(5, f32(0.3))],
        "val/top5": [(5, 0.75)],
        "ema_val/loss": [(5, 2.0)],
        "ema_val/top1": [(5, f32(0.35))],
        "ema_val/top5": [(5, f32(0.8))],
        "time/elapsed_s": [(5, 12.5)],
        "time/epoch": [(5, 1.0)],
    }


@pytest.mark.parametrize("read", READERS)
def test_resume_drops_the_points_past_the_checkpoint(tmp_path, read):
    """Killed after logging step 10 (its last checkpoint: step 6); resumed, it logs 7..12
    anew: each step once, the new values from 7 on; the old epoch point at step 10, which
    the resumed run has not reached again when read, is gone too."""
    with TensorBoardLog(tmp_path) as log:
        for step in range(1, 11):
            log.write(_progress(step, float(step)))
            if step % 5 == 0:
                log.write(_epoch(step // 5 - 1, step))
    with TensorBoardLog(tmp_path, start_step=6) as log:
        for step in range(7, 10):
            log.write(_progress(step, 100.0 + step))
    found = read(tmp_path)
    assert found["val/loss"] == [(5, 2.25)]
    with TensorBoardLog(tmp_path, start_step=9) as log:  # killed again at 9, checkpoint 9
        for step in range(10, 13):
            log.write(_progress(step, 200.0 + step))
            if step % 5 == 0:
                log.write(_epoch(step // 5 - 1, step))
    found = read(tmp_path)
    new = [(s, 100.0 + s) for s in range(7, 10)] + [(s, 200.0 + s) for s in range(10, 13)]
    assert found["train/loss"] == [(s, float(s)) for s in range(1, 7)] + new
    assert found["val/loss"] == [(5, 2.25), (10, 1.25)]
    assert len(list(tmp_path.iterdir())) == 3  # a file per log, none replaced


@pytest.mark.parametrize("read", READERS)
def test_a_restart_from_step_0_replaces_the_initial_evaluation(tmp_path, read):
    """The initial weights' evaluation starts the val/ curves at step 0; a resume that found
    no checkpoint starts again from 0 and evaluates them again: one point at step 0."""

    def initial(loss: float) -> dict:
        return {"kind": "initial", "epoch": -1, "step": 0, "val_loss": loss, "val_acc": 0.5,
                "val_acc5": 0.75}  # fmt: skip

    with TensorBoardLog(tmp_path) as log:
        log.write(initial(3.0))
        for step in (1, 2, 3):
            log.write(_progress(step, 2.0))
    with TensorBoardLog(tmp_path, start_step=0) as log:
        log.write(initial(2.5))
        log.write(_progress(1, 1.5))
    found = read(tmp_path)
    assert found == {"val/loss": [(0, 2.5)], "val/top1": [(0, 0.5)], "val/top5": [(0, 0.75)],
                     "train/loss": [(1, 1.5)], "train/acc": [(1, 0.25)],
                     "train/lr": [(1, float(np.float32(0.1)))],
                     "train/images_per_s": [(1, 1234.5)]}  # fmt: skip


def test_non_finite_values_are_kept_and_non_numbers_left_out(tmp_path):
    record = {**_progress(3, math.nan), "acc": math.inf, "note": "x", "flag": True, "none": None}
    assert set(scalars(record)) == {"train/loss", "train/acc", "train/lr", "train/images_per_s"}
    with TensorBoardLog(tmp_path) as log:
        log.write(record)
    found = _scalars(tmp_path)
    assert math.isnan(found["train/loss"][0][1])
    assert found["train/acc"] == [(3, math.inf)]


def test_bad_records_and_steps_are_refused(tmp_path):
    with TensorBoardLog(tmp_path) as log:
        for step in (None, -1, 2.0, True):
            with pytest.raises(TrainingError, match=f"step >= 0, got {step!r}"):
                log.write({**_progress(1, 1.0), "step": step})
    with pytest.raises(TrainingError, match="start_step must be a step >= 0, got -1"):
        TensorBoardLog(tmp_path, start_step=-1)


def test_a_failed_write_is_raised(tmp_path, monkeypatch):
    """A full disk surfaces from ``write`` itself, as for the run's other files."""
    log = TensorBoardLog(tmp_path)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full)
    with pytest.raises(OSError, match="No space left"):
        log.write(_progress(1, 1.0))
    log.close()


def test_write_from_metrics(tmp_path):
    records = [_epoch(0, 5), _epoch(1, 10)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    path = write_from_metrics(tmp_path)
    assert path.parent == tmp_path / "tensorboard"
    found = _scalars(tmp_path / "tensorboard")
    assert found["val/loss"] == [(5, 2.25), (10, 1.25)]
    assert found["time/epoch"] == [(5, 1.0), (10, 2.0)]
    assert "train/loss" not in found  # metrics.jsonl keeps no progress records
    with pytest.raises(TrainingError, match="already holds TensorBoard event files"):
        write_from_metrics(tmp_path)
    with pytest.raises(TrainingError, match=r"holds no metrics\.jsonl records"):
        write_from_metrics(tmp_path / "tensorboard")
