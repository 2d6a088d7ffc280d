"""The run's orbax checkpoints: the state, the running epoch's metric sums and the grain
iterator's position; restoring the newest readable one, refusing one of another model.

* **Checkpoints.** orbax, every ``checkpoint_every`` steps and at the end, the last ``keep``
  kept; orbax writes to a temporary directory and renames it, so a checkpoint is either
  complete or absent. Each holds the state and the running epoch's metric sums. A resumed
  run restores the newest readable checkpoint (an unreadable newer one is reported and
  removed; one of another model is refused, naming the shapes that differ), drops the
  metrics lines written after it and replays the data order from the same (seed, epoch): it
  continues the very same trajectory, and each epoch's line covers the whole epoch.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import grain.python as grain
import jax
import numpy as np

from .errors import TrainingError
from .state import TrainState
from .workdir import _sync

logger = logging.getLogger(__name__)


def _reason(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"params/fc/kernel": shape, ...}`` of a state or of orbax's metadata of one."""

    def name(key: Any) -> str:
        return str(next(getattr(key, a) for a in ("key", "name", "idx") if hasattr(key, a)))

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(map(name, path)): tuple(leaf.shape) for path, leaf in flat}


_SHOWN_DIFFERENCES = 6


def _check_fits(saved: Any, expected: Any, where: str) -> None:
    """Raise ``TrainingError`` naming each path whose shape differs between a checkpoint's
    metadata and the state to restore: the weights', or else the optimizer state's."""
    have, want = _shapes(saved), _shapes(expected)
    weights = {p for p in have.keys() | want.keys() if p.startswith(("params/", "batch_stats/"))}
    others = (have.keys() | want.keys()) - weights
    params_first = sorted(weights, key=lambda p: (p.startswith("batch_stats/"), p))
    for group, what in (
        (params_first, "does not fit the model"),
        (sorted(others), "holds another optimizer's state"),
    ):
        problems = [
            f"{p}: not saved" if p not in have
            else f"{p}: saved, not expected" if p not in want
            else f"{p}: {have[p]} saved, {want[p]} expected"
            for p in group
            if have.get(p) != want.get(p)
        ]  # fmt: skip
        if problems:
            shown = "; ".join(problems[:_SHOWN_DIFFERENCES])
            more = len(problems) - _SHOWN_DIFFERENCES
            rest = f" (and {more} more)" if more > 0 else ""
            raise TrainingError(f"{where} {what}: {shown}{rest}")


class _Checkpoints:
    """orbax CheckpointManager of the state and the running epoch's metric sums; synchronous,
    so donation is safe."""

    def __init__(self, directory: Path, keep: int) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        # "default" holds the state, where `seres convert` (seres_jax.formats) looks for it.
        handlers = {
            "default": ocp.StandardCheckpointHandler(),
            "epoch": ocp.JsonCheckpointHandler(),
            "data": grain.PyGrainCheckpointHandler(),  # one file per process
        }
        self.manager = ocp.CheckpointManager(
            directory.absolute(), item_handlers=handlers, options=options
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self,
        state: TrainState,
        epoch_totals: np.ndarray,
        data: Any,
        data_from: int,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        """The state, the epoch's sums, ``data``, the grain iterator's position in the
        stream of batches from step ``data_from`` on, and a host-side scheduler's state
        (timm's plateau scheduler)."""
        args = self._ocp.args
        sums = {"totals": [float(t) for t in epoch_totals], "data_from": data_from}
        if scheduler is not None:
            sums["scheduler"] = scheduler
        self.manager.save(
            int(jax.device_get(state.step)),
            args=args.Composite(
                default=args.StandardSave(state),
                epoch=args.JsonSave(sums),
                data=grain.PyGrainCheckpointSave(data),
            ),
        )

    def restore_data(self, step: int, iterator: Any) -> bool:
        """Move ``iterator`` to where checkpoint ``step``'s data iterator was; ``False`` if
        the checkpoint holds none (an earlier seres) or one it cannot take (another
        worker count)."""
        if not (self.directory / str(step) / "data").is_dir():
            return False
        try:
            self.manager.restore(
                step, args=self._ocp.args.Composite(data=grain.PyGrainCheckpointRestore(iterator))
            )
        except Exception as err:  # grain raises several kinds for a state of another shape
            logger.warning("cannot restore the data iterator of checkpoint step %s (%s): "
                           "reading on from that step's position", step, _reason(err))  # fmt: skip
            return False
        return True

    def restore(
        self, template: TrainState
    ) -> tuple[TrainState, np.ndarray | None, int, dict[str, Any] | None] | None:
        """The newest readable checkpoint's state, epoch sums (``None`` in a checkpoint of an
        earlier seres, which saved the state alone), the step its data iterator started
        from and the scheduler state saved with it (or ``None``); ``None`` if there is none.

        Unreadable newer checkpoints are set aside, with a warning: the run goes on from an
        older one and writes those steps again. One of another model is a ``TrainingError``,
        and so is a directory of unreadable checkpoints only.
        """
        args = self._ocp.args
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, template)
        unreadable: list[tuple[int, str]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            # orbax and tensorstore raise many kinds of errors for damaged files.
            try:
                metadata = self.manager.item_metadata(step)["default"]
            except Exception as err:
                unreadable.append((step, _reason(err)))
                continue
            if metadata is not None:  # None without `_METADATA`, which restoring can do without
                _check_fits(metadata.tree, abstract, f"checkpoint step {step} in {self.directory}")
            items = {"default": args.StandardRestore(abstract)}
            has_sums = (self.directory / str(step) / "epoch").is_dir()
            if has_sums:
                items["epoch"] = args.JsonRestore()
            try:
                restored = self.manager.restore(step, args=args.Composite(**items))
                epoch = restored["epoch"] if has_sums else {}
                totals = np.array(epoch["totals"], np.float64).reshape(3) if has_sums else None
                data_from = int(epoch.get("data_from", 0))
                scheduler = epoch.get("scheduler")
            except Exception as err:
                unreadable.append((step, _reason(err)))
                continue
            if unreadable:
                self._set_aside(unreadable, resumed_from=step)
            return restored["default"], totals, data_from, scheduler
        if unreadable:
            step, reason = unreadable[0]
            raise TrainingError(
                f"no readable checkpoint in {self.directory} (step {step}: {reason}); "
                "start again with --overwrite"
            )
        return None

    def _set_aside(self, unreadable: list[tuple[int, str]], resumed_from: int) -> None:
        """Rename unreadable checkpoints to ``<step>.unreadable``, which orbax ignores: the
        resumed run writes those steps again, and nothing is deleted."""
        if jax.process_index() == 0:
            moved = []
            for step, _ in unreadable:
                aside = self.directory / f"{step}.unreadable"
                for n in itertools.count(2):
                    if not aside.exists():
                        break
                    aside = self.directory / f"{step}.unreadable.{n}"
                (self.directory / str(step)).rename(aside)
                moved.append(aside.name)
            logger.warning(
                "checkpoint step %s in %s is unreadable (%s); resuming from step %s (set aside "
                "as %s)",
                ", ".join(str(s) for s, _ in unreadable), self.directory, unreadable[0][1],
                resumed_from, ", ".join(moved),
            )  # fmt: skip
        _sync("seres: unreadable checkpoints set aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
