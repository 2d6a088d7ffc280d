"""What the commands share: ``UsageError`` and the parser that raises it, PyTorch's presence
checked, argument types and groups (image preprocessing, the compilation cache), the training
progress bar and curves, the library's warnings on stderr, the PyTorch export, and conversion
errors naming the file and the architecture checked against."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeAlias

DEFAULT_MODEL, DEFAULT_DATASET = "seresnet_tiny", "digits"


class UsageError(Exception):
    """A bad argument found by the CLI itself."""


def _require_torch(command: str) -> ModuleType:
    """PyTorch, for the commands that run it; a torch-free install (a TPU VM) gets one line."""
    try:
        import torch
    except ImportError:
        raise UsageError(
            f"seres {command} runs PyTorch, which is not installed here "
            "(pip install torch, or the project's [torch] extra)"
        ) from None
    return torch


class _Parser(argparse.ArgumentParser):
    """argparse with its errors raised as ``UsageError``: one ``seres: error:`` line, no usage
    block, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# What each command's `add_arguments` adds its parser to (`seres_cli.main` makes it).
Subcommands: TypeAlias = "argparse._SubParsersAction[_Parser]"


def _int_at_least(minimum: int) -> Callable[[str], int]:
    what = "a positive integer" if minimum == 1 else "a non-negative integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    """The preprocessing of image datasets (default: the model's pretrained data config) and
    how they are read."""
    from seres_jax.data import INTERPOLATIONS

    # A run evaluated or predicted from its work directory keeps the preprocessing it recorded.
    default = "default: a run's recorded one, else the weights' pretrained config (timm's)"
    p.add_argument("--image-size", type=_int_at_least(1), help=f"input side in pixels ({default})")
    p.add_argument(
        "--crop-pct",
        type=float,
        help=f"evaluation: resize to size / crop-pct, centre crop ({default})",
    )
    p.add_argument("--interpolation", choices=sorted(INTERPOLATIONS),
                   help=f"resize filter ({default})")  # fmt: skip
    p.add_argument("--workers", type=_int_at_least(0), default=0,
                   help="grain worker processes decoding images (0: threads)")  # fmt: skip
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable image files, reporting them")  # fmt: skip


def _add_compile_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile-cache",
        metavar="DIR|off",
        help="JAX's persistent compilation cache (default: $SERES_COMPILE_CACHE, else "
        "$XDG_CACHE_HOME/seres/jax)",
    )


class _Progress:
    """A tqdm bar over optimizer steps, fed by ``fit``'s log records."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True)
        self.done = 0

    def __call__(self, record: dict[str, Any]) -> None:
        if record["kind"] == "progress":
            self.bar.update(record["step"] - self.done)
            self.done = record["step"]
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}",
                acc=f"{record['acc']:.3f}",
                img_s=f"{record['images_per_s']:.0f}",
            )
        elif record["kind"] == "initial":
            self.bar.write(
                f"before training: val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}"
            )
        else:
            self.bar.write(
                f"epoch {record['epoch'] + 1}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_acc']:.4f} | val loss {record['val_loss']:.4f} "
                f"acc {record['val_acc']:.4f}"
                + (
                    f" | EMA val loss {record['ema_val_loss']:.4f} acc {record['ema_val_acc']:.4f}"
                    if "ema_val_loss" in record
                    else ""
                )
            )

    def close(self) -> None:
        self.bar.close()


def _plot(history: list[dict[str, Any]], path: Path) -> None:
    """Training/validation loss and accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seres_jax.formats import atomic_path

    epochs = [r["epoch"] + 1 for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path, force=True) as tmp:  # a file only, never a directory
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class _WarningLines(logging.Handler):
    """The library's warnings as ``seres: warning: ...`` lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"seres: warning: {record.getMessage()}", file=sys.stderr)


def _warnings_to_stderr() -> None:
    library = logging.getLogger("seres_jax")
    if not any(isinstance(h, _WarningLines) for h in library.handlers):
        library.addHandler(_WarningLines(logging.WARNING))
        library.propagate = False  # not again through a root handler another library set up


def _export(variables: Any, path: Path, *, force: bool) -> None:
    import jax

    from seres_jax.convert import flax_to_state_dict
    from seres_jax.formats import save_state_dict

    save_state_dict(flax_to_state_dict(jax.device_get(variables)), path, force=force)


@contextlib.contextmanager
def _checked_against(path: Path, arch: str | None) -> Iterator[None]:
    """Name the file and the architecture (and where it came from) in a ``ConversionError``
    raised while ``path`` is checked against ``arch`` or converted for it."""
    from seres_jax.convert import ConversionError

    try:
        yield
    except ConversionError as err:
        if arch is None:
            raise
        raise ConversionError(err.problems, f"checking {path} against {arch}") from None
