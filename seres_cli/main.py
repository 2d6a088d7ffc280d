"""The ``seres`` command line: ``train``, ``demo``, ``convert``, ``parity``.

A thin layer over ``seres_jax``: every command is a few calls into the library. Every user
error (unknown model or dataset, bad data directory, a batch size the devices cannot split, a
bad, truncated or malicious checkpoint, an existing destination) is one ``seres: error: ...``
message and exit status 2, reported before anything is written; ``seres parity`` exits 1
when parity fails. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

DEMO_ARCH = "seresnet_tiny:in_ch=1,base=16,reduction=4"
_DTYPES = ("float32", "float16", "bfloat16")


class UsageError(Exception):
    """A bad argument found by the CLI itself."""


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from seres_jax.data import DATASET_NAMES
    from seres_jax.optim import OPTIMIZER_NAMES, SCHEDULE_NAMES
    from seres_jax.train import PRECISIONS, TrainConfig

    d = TrainConfig()  # one source of truth for the recipe's defaults

    p.add_argument(
        "--model",
        default="seresnet_tiny",
        help="architecture, e.g. seresnet_tiny or seresnet_tiny:base=16,n=3",
    )
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASET_NAMES)}")
    p.add_argument("--data-dir", help="CIFAR-10 binary files (cifar-10-batches-bin)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--optimizer", default=d.optimizer, help=f"one of {', '.join(OPTIMIZER_NAMES)}")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--no-nesterov", dest="nesterov", action="store_false")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument(
        "--decay-all",
        action="store_true",
        help="decay biases and BatchNorm parameters too (PyTorch's default)",
    )
    p.add_argument("--schedule", default=d.schedule, help=f"one of {', '.join(SCHEDULE_NAMES)}")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crop + flip (default: on for cifar10)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=sorted(PRECISIONS),
        help="bf16: bfloat16 compute, float32 parameters and optimizer state",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workdir", type=Path, help="checkpoints, metrics.jsonl, curves.png")
    p.add_argument(
        "--checkpoint-every", type=int, default=d.checkpoint_every, help="steps (0: at the end)"
    )
    p.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--export", type=Path, help="write the weights as a PyTorch .safetensors")
    p.add_argument(
        "--log-every", type=int, default=d.log_every, help="steps between metric fetches"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    p.add_argument("--no-progress", dest="progress", action="store_false")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seres", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model with optax")
    _add_train_arguments(train)
    demo = sub.add_parser("demo", help="train on digits in JAX, export, evaluate in PyTorch too")
    demo.add_argument("--workdir", type=Path, help="where to keep the run (default: temporary)")
    demo.add_argument("--epochs", type=int, default=15)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", dest="progress", action="store_false")

    convert = sub.add_parser("convert", help="convert a checkpoint between formats")
    convert.add_argument("src", type=Path, help=".pt/.pth, .safetensors, .msgpack or orbax dir")
    convert.add_argument("dst", type=Path, help="the same formats; chosen by the extension")
    convert.add_argument("--arch", help="check strictly against this architecture")
    convert.add_argument("--param-dtype", choices=sorted(_DTYPES), default="float32",
                         help="the dtype --arch expects the weights in")  # fmt: skip
    convert.add_argument("--force", action="store_true", help="replace an existing DST")

    parity = sub.add_parser("parity", help="layer-by-layer parity of PyTorch and JAX")
    parity.add_argument("checkpoint", nargs="?", type=Path,
                        help="weights for both sides (default: random, seeded)")  # fmt: skip
    parity.add_argument("--arch", required=True, help="e.g. seresnet_tiny:in_ch=1")
    parity.add_argument("--against", type=Path,
                        help="other weights for the JAX side, e.g. a converted file")  # fmt: skip
    parity.add_argument("--device", choices=("cpu", "gpu", "tpu"), help="JAX platform")
    parity.add_argument("--json", type=Path, help="also write the report as JSON here")
    parity.add_argument("--batch-size", type=int, default=4)
    parity.add_argument("--image-size", type=int, default=32)
    parity.add_argument("--seed", type=int, default=0)
    return parser


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
        else:
            self.bar.write(
                f"epoch {record['epoch'] + 1}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_acc']:.4f} | val loss {record['val_loss']:.4f} "
                f"acc {record['val_acc']:.4f}"
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _train(args: argparse.Namespace) -> int:
    from seres_jax.data import load_dataset
    from seres_jax.registry import MODELS, build_flax, parse_arch
    from seres_jax.train import TrainConfig, fit, initialize_distributed, make_mesh

    if args.export is not None and args.export.suffix != ".safetensors":
        raise UsageError(f"--export must name a .safetensors file, got {args.export}")
    if args.resume and args.workdir is None:
        raise UsageError("--resume needs --workdir")
    initialize_distributed()
    name, overrides = parse_arch(args.model)  # validates the name before the data is loaded
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    channels_arg = MODELS[name].in_channels_arg
    arch_defaults = {channels_arg: dataset.image_shape[-1], "num_classes": dataset.num_classes}
    model = build_flax(args.model, **{**arch_defaults, **overrides})
    augment = args.dataset == "cifar10" if args.augment is None else args.augment
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"augment"}
    config = TrainConfig(augment=augment, **{k: v for k, v in vars(args).items() if k in fields})
    mesh = make_mesh()
    config.validate(mesh.size)  # before the workdir exists
    steps_per_epoch = dataset.train_images.shape[0] // max(config.batch_size, 1)
    total = min(config.epochs * steps_per_epoch, config.max_steps or 1 << 62)
    progress = _Progress(total, args.progress)
    try:
        result = fit(
            model, dataset, config, workdir=args.workdir, resume=args.resume, mesh=mesh,
            on_log=progress,
        )  # fmt: skip
    finally:
        progress.close()
    if args.workdir is not None and result.history:
        _plot(_read_history(args.workdir / "metrics.jsonl"), args.workdir / "curves.png")
    if args.export is not None:
        _export(result.state.variables, args.export)
        print(f"exported PyTorch weights to {args.export}")
    if result.history:
        last = result.history[-1]
        print(f"final: val loss {last['val_loss']:.4f}, val acc {last['val_acc']:.4f}, "
              f"{result.train_seconds:.1f} s")  # fmt: skip
    return 0


def _read_history(path: Path) -> list[dict[str, Any]]:
    # The whole run's epochs, including those before a --resume.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _export(variables: Any, path: Path) -> None:
    import jax

    from seres_jax.convert import flax_to_state_dict
    from seres_jax.formats import save_state_dict

    save_state_dict(flax_to_state_dict(jax.device_get(variables)), path)


def _demo(args: argparse.Namespace) -> int:
    """Train on digits in JAX, export to PyTorch, evaluate the test split in both."""
    import tempfile

    import jax
    import numpy as np

    from seres_jax.data import load_digits
    from seres_jax.registry import build_flax, build_torch
    from seres_jax.train import TrainConfig, fit

    start = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seres-demo-"))
    dataset = load_digits(seed=args.seed)
    model = build_flax(DEMO_ARCH)
    config = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.1, seed=args.seed, log_every=11)
    n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
    platform = jax.devices()[0].platform
    print(f"JAX {jax.__version__} on {platform}: {DEMO_ARCH}, digits {n_train} train/{n_test} test")
    steps_per_epoch = dataset.train_images.shape[0] // config.batch_size
    progress = _Progress(config.epochs * steps_per_epoch, args.progress)
    try:
        result = fit(model, dataset, config, workdir=workdir, on_log=progress)
    finally:
        progress.close()
    _plot(result.history, workdir / "curves.png")
    export = workdir / "seresnet_tiny_digits.safetensors"
    _export(result.state.variables, export)

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


def _convert(args: argparse.Namespace) -> int:
    from seres_jax.formats import format_of, load_checkpoint, save_checkpoint
    from seres_jax.registry import variables_template

    dst_format, _ = format_of(args.dst)
    if args.dst.exists() and not args.force:
        raise UsageError(f"{args.dst} exists; pass --force to replace it")
    template = variables_template(args.arch, args.param_dtype) if args.arch else None
    checkpoint = load_checkpoint(args.src)
    save_checkpoint(checkpoint, args.dst, force=args.force, template=template)
    src_format, _ = format_of(args.src)
    count = len(checkpoint.to_state_dict())
    strict = f", checked against {args.arch}" if args.arch else ""
    print(f"{args.src} ({src_format}) -> {args.dst} ({dst_format}): {count} tensors{strict}")
    return 0


def _parity(args: argparse.Namespace) -> int:
    import jax
    import numpy as np
    import torch

    from seres_jax.convert import to_torch
    from seres_jax.formats import atomic_path, load_checkpoint
    from seres_jax.parity import parity_report, randomize_batchnorm
    from seres_jax.registry import build_flax, build_torch, model_config, variables_template

    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    spec, arguments = model_config(args.arch)
    try:
        device = jax.devices(args.device)[0] if args.device else None
    except RuntimeError:
        raise UsageError(f"JAX has no {args.device} device here") from None
    template = variables_template(args.arch)
    torch.manual_seed(args.seed)
    torch_model = build_torch(args.arch)
    if args.checkpoint is not None:
        state = load_checkpoint(args.checkpoint).to_state_dict(template)
        torch_model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
    else:
        randomize_batchnorm(torch_model, args.seed)
    variables = load_checkpoint(args.against).to_variables(template) if args.against else None
    shape = (args.batch_size, arguments[spec.in_channels_arg], args.image_size, args.image_size)
    x = np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)
    report = parity_report(
        torch_model, build_flax(args.arch), x, variables=variables, arch=args.arch,
        device=device, seed=args.seed,
    )  # fmt: skip
    print(report.format())
    if args.json is not None:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from seres_jax.convert import ConversionError
    from seres_jax.data import DataError
    from seres_jax.formats import CheckpointError
    from seres_jax.registry import RegistryError
    from seres_jax.train import TrainingError

    commands = {"train": _train, "demo": _demo, "convert": _convert, "parity": _parity}
    errors = (UsageError, DataError, RegistryError, TrainingError, ConversionError, CheckpointError)
    try:
        return commands[args.command](args)
    except errors as err:
        message = " ".join(str(err).split()) if not isinstance(err, ConversionError) else err
        print(f"seres: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seres: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
