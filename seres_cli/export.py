"""``seres export``: a ``seres train`` work directory or a checkpoint as the directory timm's
``push_to_hf_hub`` uploads (``config.json``, ``model.safetensors``, ``README.md``), which
``timm.create_model("local-dir:OUT_DIR", pretrained=True)`` loads; the model card names the
``seres train`` command that trains the run again (``train_command``). ``--format stablehlo``:
the inference function serialised with ``jax.export`` for serving without seres
(``model.stablehlo`` and ``model.json``, ``seres_jax.serving``), from a run, a checkpoint, a timm
directory or ``hf-hub:ORG/NAME``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import (
    Subcommands,
    UsageError,
    _checked_against,
    _int_at_least,
    _Parser,
    _warnings_to_stderr,
)

FORMATS = ("timm", "stablehlo")


def add_arguments(sub: Subcommands) -> None:
    export = sub.add_parser(
        "export",
        help="write a run or checkpoint as timm's hub directory (config.json, "
        "model.safetensors, README.md), or as a jax.export artifact for serving",
    )
    export.add_argument("src", type=Path,
                        help="a `seres train` work directory (its latest checkpoint; the EMA "
                        "weights if the run kept one) or a checkpoint in any format; with "
                        "--format stablehlo also a timm directory or hf-hub:ORG/NAME")  # fmt: skip
    export.add_argument("out_dir", type=Path, help="the directory to write")
    export.add_argument("--format", choices=FORMATS, default="timm",
                        help="timm: what timm.models.push_to_hf_hub uploads (default); "
                        "stablehlo: model.stablehlo (jax.export's serialised inference "
                        "function, preprocessed NHWC float32 batch -> logits, any batch size) "
                        "and model.json (input shape, preprocessing, class names)")  # fmt: skip
    export.add_argument("--arch", help="default: the work directory's config.json")
    export.add_argument("--name", help="the model card's title (default: OUT_DIR's name)")
    export.add_argument("--license",
                        help="the model card's license (default: apache-2.0, timm's); "
                        "stablehlo: model.json's (default: none)")  # fmt: skip
    export.add_argument("--force", action="store_true",
                        help="write into an existing OUT_DIR, replacing its config.json, "
                        "model.safetensors and README.md (nothing else in it); stablehlo: "
                        "replace an existing artifact directory whole, in one step")  # fmt: skip
    serving = export.add_argument_group("--format stablehlo")
    serving.add_argument("--platforms", type=_platforms, metavar="P[,P...]",
                         help="the platforms to lower for, of "
                         f"{', '.join(_serving_names()[0])}; cpu always (default: "
                         f"{','.join(_serving_names()[1])})")  # fmt: skip
    serving.add_argument("--image-size", type=_int_at_least(1),
                         help="the input's side (default: the run's validation size, else the "
                         "weights')")  # fmt: skip
    serving.add_argument("--crop-pct", type=float, help="model.json's eval crop (default: as "
                         "`seres eval`)")  # fmt: skip
    serving.add_argument("--interpolation", choices=_interpolations(),
                         help="model.json's resize interpolation (default: as `seres "
                         "eval`)")  # fmt: skip
    serving.add_argument("--no-check", dest="check", action="store_false",
                         help="skip comparing the serialised model's logits with the model's on "
                         "the CPU before writing")  # fmt: skip


def _serving_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``seres_jax.serving``'s ``PLATFORMS`` and ``DEFAULT_PLATFORMS`` (a test holds them
    equal): the parser is built without importing JAX."""
    return ("cpu", "cuda", "rocm", "tpu"), ("cpu", "cuda", "tpu")


def _interpolations() -> list[str]:
    from seres_jax.data import INTERPOLATIONS

    return sorted(INTERPOLATIONS)


def _platforms(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = _serving_names()[0]
    for name in names:
        if name not in known:
            raise argparse.ArgumentTypeError(
                f"unknown platform {name!r}; valid names: {', '.join(known)}"
            )
    if not names:
        raise argparse.ArgumentTypeError(f"no platform named; valid names: {', '.join(known)}")
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    from seres_jax.export import export_run
    from seres_jax.train import find_run_config

    if args.format == "stablehlo":
        return _run_stablehlo(args)
    given = [flag for flag, value in (("--platforms", args.platforms),
             ("--image-size", args.image_size), ("--crop-pct", args.crop_pct),
             ("--interpolation", args.interpolation)) if value is not None]  # fmt: skip
    if given or not args.check:
        raise UsageError(f"{(given or ['--no-check'])[0]} is for --format stablehlo; timm's "
                         "format keeps the weights and their preprocessing")  # fmt: skip
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
                            command=command, name=args.name,
                            license=args.license or "apache-2.0")  # fmt: skip
    for note in report.notes:
        print(f"seres: warning: {note}", file=sys.stderr)
    print(f"{args.src} -> {report.out_dir} ({args.format}): {report.arch}, the {report.weights} "
          f"weights, {report.num_tensors} tensors; timm loads it with "
          f'timm.create_model("local-dir:{report.out_dir}", pretrained=True)')  # fmt: skip
    return 0


def _run_stablehlo(args: argparse.Namespace) -> int:
    """``--format stablehlo``: ``seres_jax.serving.export_source``, its notes as warnings."""
    from seres_jax.hub import is_hub, is_timm_dir
    from seres_jax.serving import DEFAULT_PLATFORMS, export_source
    from seres_jax.train import find_run_config

    hub = is_hub(args.src) or is_timm_dir(args.src)
    if not hub and not args.src.exists():
        raise UsageError(f"{args.src}: no such file or directory")
    record = None if hub else find_run_config(args.src)
    if not hub and args.arch is None and (record is None or not record[1].get("arch")):
        raise UsageError(f"--arch is needed: {args.src} is not part of a `seres train` work "
                         "directory with a config.json naming its architecture")  # fmt: skip
    if hub and args.arch is not None:
        raise UsageError(f"--arch: {args.src} names its architecture in its config.json; "
                         "leave --arch out")  # fmt: skip
    _warnings_to_stderr()
    arch = args.arch or (record[1]["arch"] if record is not None else None)
    with _checked_against(args.src, arch):
        report = export_source(
            str(args.src) if hub else args.src, args.out_dir, arch=args.arch,
            platforms=args.platforms or DEFAULT_PLATFORMS, image_size=args.image_size,
            crop_pct=args.crop_pct, interpolation=args.interpolation, check=args.check,
            force=args.force, name=args.name, license=args.license,
        )  # fmt: skip
    for note in report.notes:
        print(f"seres: warning: {note}", file=sys.stderr)
    spec = report.spec
    height, width, channels = spec.input_shape
    checked = (f"checked on the CPU: largest logit difference {report.check_error:.2e} "
               "(relative) from the model's" if report.check_error is not None
               else "not checked (--no-check)")  # fmt: skip
    print(f"{args.src} -> {report.out_dir} (stablehlo): {spec.arch}, the {spec.weights} "
          f"weights, float32[batch, {height}, {width}, {channels}] -> logits[batch, "
          f"{spec.num_classes}], for {', '.join(spec.platforms)}, "
          f"{report.model_bytes / 1e6:.1f} MB; {checked}")  # fmt: skip
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
