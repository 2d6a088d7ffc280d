"""``seres data pack``: an image folder as ArrayRecord shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Subcommands, _int_at_least, _warnings_to_stderr


def add_arguments(sub: Subcommands) -> None:
    data = sub.add_parser("data", help="prepare datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    pack = data_sub.add_parser("pack", help="an image folder as ArrayRecord shards")
    pack.add_argument("imagefolder", type=Path, help="ROOT with train/ and val/ class directories")
    pack.add_argument("out_dir", type=Path, help="the shards and classes.json go here")
    pack.add_argument("--shards", type=_int_at_least(1), default=1, help="shards per split")
    pack.add_argument("--force", action="store_true", help="replace an earlier pack in OUT_DIR")
    pack.add_argument("--skip-bad-images", action="store_true",
                      help="leave out unreadable image files, reporting them")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """``seres data pack``: an image folder as ArrayRecord shards."""
    from seres_jax.data import pack

    _warnings_to_stderr()
    manifest = pack(args.imagefolder, args.out_dir, shards=args.shards, force=args.force,
                    skip_bad_images=args.skip_bad_images)  # fmt: skip
    counts = ", ".join(f"{split} {info['count']} images in {len(info['shards'])} shards"
                       for split, info in manifest["splits"].items())  # fmt: skip
    print(f"{args.imagefolder} -> {args.out_dir}: {len(manifest['classes'])} classes; {counts}")
    return 0
