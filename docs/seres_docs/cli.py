"""The command line's reference: ``seres CMD --help`` of every command, run, not copied.

Each page's text is what a user's terminal prints, captured from the installed ``seres`` in a
subprocess (the docs never import ``seres_cli``) at a fixed width, ``COLUMNS=100``, so that the
page and a test's own run of the command compare equal.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

# Every command and sub-command, in `seres --help`'s order.
COMMANDS: tuple[tuple[str, ...], ...] = (
    (), ("train",), ("demo",), ("eval",), ("predict",), ("data",), ("data", "pack"),
    ("convert",), ("export",), ("parity",),
)  # fmt: skip
WIDTH = "100"


def seres_command() -> list[str]:
    """The installed ``seres`` entry point beside this interpreter, else on ``PATH``."""
    beside = os.path.join(os.path.dirname(sys.executable), "seres")
    found = beside if os.path.exists(beside) else shutil.which("seres")
    if found is None:
        raise RuntimeError("the seres command is not installed: pip install -e '.[docs]'")
    return [found]


def help_text(command: tuple[str, ...]) -> str:
    """``seres COMMAND --help`` as the terminal shows it at ``WIDTH`` columns."""
    env = {**os.environ, "COLUMNS": WIDTH}
    done = subprocess.run(
        [*seres_command(), *command, "--help"], capture_output=True, text=True, env=env,
        check=False, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"seres {' '.join(command)} --help failed: {done.stderr.strip()}")
    return done.stdout


@functools.cache
def all_help() -> dict[tuple[str, ...], str]:
    """Every command's help, run side by side (each run starts a Python process)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(COMMANDS, pool.map(help_text, COMMANDS), strict=True))


def cli_markdown() -> str:
    """One section per command, its help verbatim."""
    parts = []
    for command, text in all_help().items():
        name = " ".join(("seres", *command))
        parts.append(f"## `{name}`\n\n```text\n$ {name} --help\n{text.rstrip()}\n```\n")
    return "\n".join(parts)
