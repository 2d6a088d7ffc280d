"""The ``seres`` command line: ``train``, ``eval``, ``predict``, ``demo``, ``convert``, ``export``,
``parity``, ``data``.

A thin layer over ``seres_jax``: every command is a few calls into the library. Every user
error (unknown model or dataset, bad data directory, a batch size the devices cannot split, a
bad, truncated or malicious checkpoint, an existing destination) is one ``seres: error: ...``
message and exit status 2, reported before anything is written, and so is a training run
that diverged; warnings (a resume from scratch, an unreadable checkpoint skipped) are
``seres: warning: ...`` lines. ``seres parity`` exits 1 when parity fails. ``train`` builds one
``TrainConfig`` from its flags (named as its fields), which the run records in the work
directory's ``config.json``; ``eval`` and ``convert`` read the architecture from there.
``train``, ``eval``, ``predict`` and ``demo`` keep JAX's compilation cache (``--compile-cache``).

Each command is a module of this package (``add_arguments(sub)``, ``run(args) -> int``), what
they share is in ``seres_cli.common``; this one assembles the parser, runs the command and
reports its errors. The commands import ``seres_jax`` (and so JAX) only when they run. Nothing
imports this package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seres import __version__

from . import convert, data, demo, export, parity, predict, train
from . import eval as evaluate
from .common import UsageError, _Parser

# Each command's module, in the order `seres --help` lists them.
COMMANDS = {
    "train": train, "demo": demo, "eval": evaluate, "predict": predict, "data": data,
    "convert": convert, "export": export, "parity": parity,
}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="seres",
        description="SE-ResNets in JAX and PyTorch: train, evaluate, predict, convert, export, "
        "check parity.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_arguments(sub)
    return parser


def _print_error(message: str, *details: str) -> None:
    """``seres: error: message``, then one indented line per detail."""

    # Messages quote file names and keys that a hostile file chose: every control character
    # (line breaks too) is escaped, so nothing can recolour the terminal or forge a line.
    def safe(text: str) -> str:
        return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)

    lines = [f"seres: error: {safe(message)}", *(f"  - {safe(d)}" for d in details)]
    print("\n".join(lines), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as err:
        _print_error(str(err))
        return 2
    from seres_jax.convert import ConversionError
    from seres_jax.data import DataError
    from seres_jax.formats import CheckpointError
    from seres_jax.registry import RegistryError
    from seres_jax.train import TrainingError

    errors = (UsageError, DataError, RegistryError, TrainingError, ConversionError, CheckpointError)
    try:
        if "compile_cache" in args:
            from seres_jax import compiler

            directory = args.compile_cache or compiler.default_compile_cache()
            try:
                compiler.enable_compile_cache(directory)
            except OSError as err:
                reason = "not a directory" if Path(directory).is_file() else err.strerror or err
                raise UsageError(f"--compile-cache {directory}: {reason}") from None
        return COMMANDS[args.command].run(args)
    except ConversionError as err:
        _print_error(str(err).splitlines()[0], *err.problems)  # one problem a line
        return 2
    except errors as err:
        _print_error(" ".join(str(err).split()))
        return 2
    except KeyboardInterrupt:
        print("seres: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
