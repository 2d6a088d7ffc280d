"""Runs the reference notebook's own code, so tests compare against it and not a re-typing of it.

The notebook (``../shared/seed/se_residual_notebook.txt`` beside the repository; a copy is
kept in ``fixtures/`` for checkouts without it) is plain text: each code cell follows an
``In [n]:`` line and ends at the first run of two blank lines, after which come its printed
outputs.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "se_residual_notebook.txt"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "se_residual_notebook.txt"
_CELL = re.compile(r"^In \[\d+\]:\n\n(.*?)\n\n\n", re.MULTILINE | re.DOTALL)


@dataclass
class Notebook:
    namespace: dict[str, Any]
    printed: str
    expected_output: str


def notebook_path() -> Path:
    return SHARED if SHARED.exists() else FIXTURE


def code_cells(text: str) -> list[str]:
    return _CELL.findall(text)


def run_notebook(path: Path | None = None) -> Notebook:
    """Execute every code cell in one namespace; return it with what the cells printed."""
    text = (path or notebook_path()).read_text(encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "se_residual_notebook"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in code_cells(text):
            exec(compile(cell, "se_residual_notebook", "exec"), namespace)
    expected = "\n".join(
        line.strip() for line in text.splitlines() if re.match(r"^ *\S.* \| in \(|^ok \| out", line)
    )
    return Notebook(namespace, out.getvalue(), expected)
