"""``seres export``: a ``seres train`` work directory or a checkpoint as the directory timm's
``push_to_hf_hub`` uploads (``config.json``, ``model.safetensors``, ``README.md``), which
``timm.create_model("local-dir:OUT_DIR", pretrained=True)`` loads; the model card names the
``seres train`` command that trains the run again (``train_command``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import Subcommands, UsageError, _checked_against, _Parser, _warnings_to_stderr

FORMATS = ("timm",)


def add_arguments(sub: Subcommands) -> None:
    export = sub.add_parser(
        "export",
        help="write a run or checkpoint as timm's hub directory (config.json, "
        "model.safetensors, README.md)",
    )
    export.add_argument("src", type=Path,
                        help="a `seres train` work directory (its latest checkpoint; the EMA "
                        "weights if the run kept one) or a checkpoint in any format")  # fmt: skip
    export.add_argument("out_dir", type=Path, help="the directory to write")
    export.add_argument("--format", choices=FORMATS, default="timm",
                        help="timm: what timm.models.push_to_hf_hub uploads (default)")  # fmt: skip
    export.add_argument("--arch", help="default: the work directory's config.json")
    export.add_argument("--name", help="the model card's title (default: OUT_DIR's name)")
    export.add_argument("--license", default="apache-2.0",
                        help="the model card's license (default: apache-2.0, timm's)")  # fmt: skip
    export.add_argument("--force", action="store_true",
                        help="write into an existing OUT_DIR, replacing its config.json, "
                        "model.safetensors and README.md (nothing else in it)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from seres_jax.export import export_run
    from seres_jax.train import find_run_config

    if not args.src.exists():
        raise UsageError(f"{args.src}: no such file or directory")
    record = find_run_config(args.src)
    if args.arch is None and (record is None or not record[1].get("arch")):
        raise UsageError(f"--arch is needed: {args.src} is not part of a `seres train` work "
                         "directory with a config.json naming its architecture")  # fmt: skip
    command = train_command(record[1]["config"]) if record is not None else None
    _warnings_to_stderr()
    arch = args.arch or (record[1]["arch"] if record is not None else None)
    with _checked_against(args.src, arch):
        report = export_run(args.src, args.out_dir, arch=args.arch, force=args.force,
                            command=command, name=args.name, license=args.license)  # fmt: skip
    for note in report.notes:
        print(f"seres: warning: {note}", file=sys.stderr)
    print(f"{args.src} -> {report.out_dir} ({args.format}): {report.arch}, the {report.weights} "
          f"weights, {report.num_tensors} tensors; timm loads it with "
          f'timm.create_model("local-dir:{report.out_dir}", pretrained=True)')  # fmt: skip
    return 0


def train_command(config: Mapping[str, Any]) -> str:
    """The ``seres train`` command line that makes the ``TrainConfig`` a run recorded
    (``config.json``'s ``config``): every field that differs from what leaving its flag out
    gives, by the flag ``seres train`` takes for it (read from its parser)."""
    from seres_jax.data import DATASETS
    from seres_jax.train import TrainConfig

    from . import train

    sub = _Parser(prog="seres").add_subparsers()
    train.add_arguments(sub)
    actions = {a.dest: a for a in sub.choices["train"]._actions if a.option_strings}
    argv = ["seres", "train"]
    for key, value in config.items():
        action = actions.get(key)
        if action is None:
            continue  # a field no flag sets (an earlier or later seres' field)
        default = action.default
        # config.json's lists, a TrainConfig's tuples, the parser's lists: compared as lists.
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(value, tuple):
            value = list(value)
        if value == default:
            continue
        # Two fields are resolved when left out: lr (seres' default, or from lr_base: then it
        # is given, as the value the run resolved), augment (the dataset's).
        if key == "lr" and config.get("lr_base") is None and value == TrainConfig.lr:
            continue
        spec = DATASETS.get(config.get("dataset") or "")
        if key == "augment" and spec is not None and value == spec.augment:
            continue
        name = f"--{key.replace('_', '-')}"
        flag = name if name in action.option_strings else action.option_strings[-1]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif action.nargs == 0:  # store_true / store_false: its flag gives the non-default
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)
