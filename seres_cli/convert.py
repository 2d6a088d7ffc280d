"""``seres convert``: a checkpoint from one format to another, checked against the
architecture given or read from the run's ``config.json``; or a timm model's weights from the
Hugging Face hub (``hf-hub:ORG/NAME[@REV]``), checked against the architecture its hub
``config.json`` describes (``seres_jax.hub``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Subcommands, UsageError, _checked_against

_DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(sub: Subcommands) -> None:
    convert = sub.add_parser("convert", help="convert a checkpoint between formats")
    convert.add_argument("src", type=Path, help=".pt/.pth, .safetensors, .msgpack, orbax dir, "
                         "or hf-hub:ORG/NAME[@REV] (a timm model on the hub)")  # fmt: skip
    convert.add_argument("dst", type=Path, help="the same formats; chosen by the extension")
    convert.add_argument(
        "--arch",
        help="check strictly against this architecture (default: "
        "the one in the config.json of a work directory SRC is part of)",
    )
    convert.add_argument("--param-dtype", choices=sorted(_DTYPES), default="float32",
                         help="the dtype --arch expects the weights in")  # fmt: skip
    convert.add_argument("--force", action="store_true", help="replace an existing DST")


def run(args: argparse.Namespace) -> int:
    from seres_jax.hub import is_hub, is_timm_dir

    if is_hub(args.src) or is_timm_dir(args.src):  # timm's config.json names the model
        return _run_hub(args)
    from seres_jax.formats import check_destination, format_of, load_checkpoint, save_checkpoint
    from seres_jax.registry import variables_template
    from seres_jax.train import find_run_config

    src_format, _ = format_of(args.src)
    dst_format, _ = format_of(args.dst)
    # Refused before anything is read: an existing DST without --force, one of another kind,
    # or one that is or holds SRC.
    check_destination(args.dst, force=args.force, directory=dst_format == "orbax", source=args.src)
    arch, source = args.arch, ""
    run = find_run_config(args.src) if arch is None else None
    if run is not None and run[1].get("arch"):
        arch, source = run[1]["arch"], f" (from {run[0]})"
    template = variables_template(arch, args.param_dtype) if arch else None
    with _checked_against(args.src, f"{arch}{source}" if arch else None):
        checkpoint = load_checkpoint(args.src, template=template)
        save_checkpoint(checkpoint, args.dst, force=args.force, template=template)
    strict = f", checked against {arch}{source}" if arch else ""
    print(f"{args.src} ({src_format}) -> {args.dst} ({dst_format}): "
          f"{checkpoint.num_tensors} tensors{strict}")  # fmt: skip
    return 0


def _run_hub(args: argparse.Namespace) -> int:
    """A timm model's weights from the hub, checked strictly against the architecture its
    config describes: the one the weights belong to, so ``--arch`` has no say."""
    from seres_jax.formats import check_destination, format_of, load_checkpoint, save_checkpoint
    from seres_jax.hub import resolve_model
    from seres_jax.registry import variables_template

    source = str(args.src)
    if args.arch is not None:
        raise UsageError(f"--arch: {source} names its architecture in its config.json; leave "
                         "--arch out")  # fmt: skip
    dst_format, _ = format_of(args.dst)
    directory = dst_format == "orbax"
    # Refused before anything is fetched: an existing DST without --force, one of another kind.
    check_destination(args.dst, force=args.force, directory=directory)
    hub = resolve_model(source)
    assert hub is not None  # routed here for hf-hub: names and timm directories
    check_destination(args.dst, force=args.force, directory=directory, source=hub.weights)
    arch = f"{hub.arch} (from {source}'s config.json)"
    template = variables_template(hub.arch, args.param_dtype)
    with _checked_against(hub.weights, arch):
        checkpoint = load_checkpoint(hub.weights, template=template)
        save_checkpoint(checkpoint, args.dst, force=args.force, template=template)
    print(f"{source} ({hub.repo_id} at {hub.commit[:12]}, {hub.weights.name}) -> {args.dst} "
          f"({dst_format}): {checkpoint.num_tensors} tensors, checked against {arch}")  # fmt: skip
    return 0
