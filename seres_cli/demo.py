"""``seres demo``: train on the digits in JAX, export to PyTorch, evaluate the test split in
both."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import (
    Subcommands,
    UsageError,
    _add_compile_cache,
    _export,
    _int_at_least,
    _plot,
    _Progress,
    _require_torch,
)

DEMO_ARCH = "seresnet_tiny:in_ch=1,base=16,reduction=4"
DEMO_EXPORT = "seresnet_tiny_digits.safetensors"


def add_arguments(sub: Subcommands) -> None:
    demo = sub.add_parser("demo", help="train on digits in JAX, export, evaluate in PyTorch too")
    demo.add_argument("--workdir", type=Path, help="where to keep the run (default: temporary)")
    demo.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo run in --workdir"
    )
    demo.add_argument(
        "--epochs", type=_int_at_least(1), default=15, help="epochs to train (default: %(default)s)"
    )
    demo.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=0,
        help="seed of the digits split, the initialisation and the data order "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (the per-epoch lines still print)",
    )
    _add_compile_cache(demo)


def run(args: argparse.Namespace) -> int:
    """Train on digits in JAX, export to PyTorch, evaluate the test split in both."""
    import tempfile

    import jax
    import numpy as np

    from seres_jax.data import load_digits
    from seres_jax.registry import build_flax, build_torch
    from seres_jax.train import CURVES_FILE, RUN_FILES, TrainConfig, fit

    start = time.perf_counter()
    _require_torch("demo")  # before training, not after it
    if args.workdir is not None and args.workdir.exists() and not args.overwrite:
        earlier = [n for n in (*RUN_FILES, DEMO_EXPORT) if (args.workdir / n).exists()]
        if earlier:
            raise UsageError(f"{args.workdir} holds an earlier run ({', '.join(earlier)}); "
                             "pass --overwrite to replace it")  # fmt: skip
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seres-demo-"))
    dataset = load_digits(seed=args.seed)
    model = build_flax(DEMO_ARCH)
    config = TrainConfig(model=DEMO_ARCH, epochs=args.epochs, batch_size=64, lr=0.1,
                         seed=args.seed, log_every=11)  # fmt: skip
    n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
    platform = jax.devices()[0].platform
    print(f"JAX {jax.__version__} on {platform}: {DEMO_ARCH}, digits {n_train} train/{n_test} test")
    progress = _Progress(config.steps(dataset.train_images.shape[0]).last, args.progress)
    try:
        result = fit(
            model, dataset, config, workdir=workdir, overwrite=args.overwrite, on_log=progress
        )
    finally:
        progress.close()
    _plot(result.history, workdir / CURVES_FILE)
    export = workdir / DEMO_EXPORT
    _export(result.state.variables, export, force=args.overwrite)

    import safetensors.torch
    import torch

    torch_model = build_torch(DEMO_ARCH)
    torch_model.load_state_dict(safetensors.torch.load_file(str(export)), strict=True)
    torch_model.eval()
    images, labels = dataset.test_images, dataset.test_labels
    logits_jax = np.asarray(jax.jit(model.apply)(jax.device_get(result.state.variables), images))
    with torch.no_grad():
        logits_torch = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    acc_jax = float(np.mean(logits_jax.argmax(-1) == labels))
    acc_torch = float(np.mean(logits_torch.argmax(-1) == labels))
    diff = float(np.max(np.abs(logits_jax - logits_torch)))
    print(f"test accuracy: JAX {acc_jax:.2%}, PyTorch {acc_torch:.2%} "
          f"({len(labels)} images; weights exported to {export})")  # fmt: skip
    print(f"largest logit difference JAX vs PyTorch: {diff:.2e}")
    print(f"wall time {time.perf_counter() - start:.1f} s (training {result.train_seconds:.1f} s, "
          f"compile included); run in {workdir}")  # fmt: skip
    return 0
