"""``metrics.jsonl``, one JSON line per epoch of a run: ``read_metrics``, and the atomic
rewrite of the whole file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax

from ..formats import atomic_path
from .errors import TrainingError
from .workdir import METRICS_FILE


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The epoch records of ``workdir/metrics.jsonl``, one per epoch of the whole run (resumed
    or not) in order; ``[]`` when there is no such file."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (isinstance(record, dict) and {"epoch", "step"} <= record.keys()):
            raise TrainingError(f"{path}, line {number}: not an epoch record of seres")
        records.append(record)
    return records


def _write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` whole: a kill leaves the old file or the new one."""
    if jax.process_index() == 0:
        with atomic_path(path, force=True) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
