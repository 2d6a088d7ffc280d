"""The ``seres`` command line: ``train``, ``eval``, ``demo``, ``convert``, ``parity``, ``data``.

A thin layer over ``seres_jax``: every command is a few calls into the library. Every user
error (unknown model or dataset, bad data directory, a batch size the devices cannot split, a
bad, truncated or malicious checkpoint, an existing destination) is one ``seres: error: ...``
message and exit status 2, reported before anything is written, and so is a training run
that diverged; warnings (a resume from scratch, an unreadable checkpoint skipped) are
``seres: warning: ...`` lines. ``seres parity`` exits 1 when parity fails. ``train`` builds one
``TrainConfig`` from its flags (named as its fields), which the run records in the work
directory's ``config.json``; ``eval`` and ``convert`` read the architecture from there.
``train``, ``eval`` and ``demo`` keep JAX's compilation cache (``--compile-cache``). Nothing
imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from seres import __version__

DEFAULT_MODEL, DEFAULT_DATASET = "seresnet_tiny", "digits"
DEMO_ARCH = "seresnet_tiny:in_ch=1,base=16,reduction=4"
DEMO_EXPORT = "seresnet_tiny_digits.safetensors"
_DTYPES = ("float32", "float16", "bfloat16")


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


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from seres_jax.data import DATASET_NAMES
    from seres_jax.optim import OPTIMIZER_NAMES, SCHEDULE_NAMES
    from seres_jax.train import PRECISIONS, TrainConfig

    d = TrainConfig()  # one source of truth for the recipe's defaults
    # The flags named as TrainConfig's fields make the config (`_train`); the others
    # (--workdir, --resume, --export, ...) steer the command.
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="architecture, e.g. seresnet_tiny or seresnet_tiny:base=16,n=3",
    )
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"one of {', '.join(DATASET_NAMES)}")
    p.add_argument(
        "--data-dir",
        help="cifar10: its binary files; imagefolder: ROOT with train/ "
        "and val/ class directories; arrayrecord: `seres data pack`'s OUT_DIR",
    )
    _add_image_arguments(p)
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
    p.add_argument("--mixup", type=float, default=d.mixup, help="timm's mixup alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="timm's cutmix alpha (0: off)")
    p.add_argument("--mix-prob", type=float, default=d.mix_prob,
                   help="probability that a batch is mixed")  # fmt: skip
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crop + flip (default: the dataset's: on for cifar10 (pad-crop-flip), "
        "imagefolder and arrayrecord (RandomResizedCrop))",
    )
    p.add_argument("--color-jitter", type=float, default=d.color_jitter,
                   help="image datasets: brightness/contrast/saturation jitter")  # fmt: skip
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=sorted(PRECISIONS),
        help="bf16: bfloat16 compute, float32 parameters and optimizer state",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workdir", type=Path, help="checkpoints, metrics.jsonl, curves.png")
    p.add_argument(
        "--checkpoint-every", type=int, default=d.checkpoint_every, help="steps (0: at the end)"
    )
    p.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --workdir where it stopped"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a --workdir holding a run (deleting its checkpoints, metrics and "
        "curves, nothing else); replace an existing --export file",
    )
    p.add_argument("--export", type=Path, help="write the weights as a PyTorch .safetensors")
    p.add_argument(
        "--log-every", type=int, default=d.log_every, help="steps between metric fetches"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    p.add_argument(
        "--override",
        action="store_true",
        help="with --resume: accept a model, dataset or recipe other than the run's config.json "
        "(recorded there)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")  # fmt: skip
    _add_compile_cache(p)


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    """The preprocessing of image datasets (default: the model's pretrained data config) and
    how they are read."""
    from seres_jax.data import INTERPOLATIONS

    p.add_argument("--image-size", type=_int_at_least(1), help="default: the model's (timm's)")
    p.add_argument("--crop-pct", type=float, help="eval: resize to size / crop-pct, centre crop")
    p.add_argument("--interpolation", choices=sorted(INTERPOLATIONS))
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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seres", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model with optax")
    _add_train_arguments(train)
    demo = sub.add_parser("demo", help="train on digits in JAX, export, evaluate in PyTorch too")
    demo.add_argument("--workdir", type=Path, help="where to keep the run (default: temporary)")
    demo.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo run in --workdir"
    )
    demo.add_argument("--epochs", type=_int_at_least(1), default=15)
    demo.add_argument("--seed", type=_int_at_least(0), default=0)
    demo.add_argument("--no-progress", dest="progress", action="store_false")
    _add_compile_cache(demo)

    evaluate = sub.add_parser("eval", help="top-1/top-5 of a checkpoint on a dataset split")
    evaluate.add_argument("src", type=Path,
                          help="a `seres train` work directory (its latest checkpoint) or a "
                          "checkpoint in any format")  # fmt: skip
    evaluate.add_argument("--arch", help="default: the work directory's config.json")
    evaluate.add_argument("--dataset", help="default: the run's, else digits")
    evaluate.add_argument("--data-dir", help="default: the run's")
    evaluate.add_argument("--split", choices=("val", "train"), default="val")
    evaluate.add_argument(
        "--batch-size", type=_int_at_least(1), help="default: the run's, else 256"
    )
    _add_image_arguments(evaluate)
    evaluate.add_argument("--torch", action="store_true",
                          help="also run seres_torch on the same batches and compare")  # fmt: skip
    evaluate.add_argument("--json", type=Path, help="also write the results as JSON here")
    evaluate.add_argument("--force", action="store_true", help="replace an existing --json file")
    evaluate.add_argument("--no-progress", dest="progress", action="store_false")
    _add_compile_cache(evaluate)

    data = sub.add_parser("data", help="prepare datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    pack = data_sub.add_parser("pack", help="an image folder as ArrayRecord shards")
    pack.add_argument("imagefolder", type=Path, help="ROOT with train/ and val/ class directories")
    pack.add_argument("out_dir", type=Path, help="the shards and classes.json go here")
    pack.add_argument("--shards", type=_int_at_least(1), default=1, help="shards per split")
    pack.add_argument("--force", action="store_true", help="replace an earlier pack in OUT_DIR")
    pack.add_argument("--skip-bad-images", action="store_true",
                      help="leave out unreadable image files, reporting them")  # fmt: skip

    convert = sub.add_parser("convert", help="convert a checkpoint between formats")
    convert.add_argument("src", type=Path, help=".pt/.pth, .safetensors, .msgpack or orbax dir")
    convert.add_argument("dst", type=Path, help="the same formats; chosen by the extension")
    convert.add_argument(
        "--arch",
        help="check strictly against this architecture (default: "
        "the one in the config.json of a work directory SRC is part of)",
    )
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
    parity.add_argument("--force", action="store_true", help="replace an existing --json file")
    parity.add_argument("--batch-size", type=_int_at_least(1), default=4)
    parity.add_argument("--image-size", type=_int_at_least(1), default=32)
    parity.add_argument("--seed", type=_int_at_least(0), default=0)
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
    with atomic_path(path, force=True) as tmp:  # a file only, never a directory
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _train(args: argparse.Namespace) -> int:
    from seres_jax.data import load_dataset
    from seres_jax.registry import build_flax, parse_arch, variables_template
    from seres_jax.train import (
        CURVES_FILE,
        TrainConfig,
        fit,
        initialize_distributed,
        make_mesh,
        read_metrics,
        run_arch,
    )

    if args.export is not None:
        if args.export.suffix != ".safetensors":
            raise UsageError(f"--export must name a .safetensors file, got {args.export}")
        if args.export.is_dir():
            raise UsageError(f"--export {args.export} is a directory")
        if args.export.exists() and not args.overwrite:
            raise UsageError(f"{args.export} exists; pass --overwrite to replace it")
    if args.resume and args.workdir is None:
        raise UsageError("--resume needs --workdir")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.override and not args.resume:
        raise UsageError("--override goes with --resume")
    _warnings_to_stderr()
    initialize_distributed()
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    parse_arch(args.model)  # validates the name before the data is loaded
    mesh = make_mesh()
    config.validate(mesh.size)  # before the data is read (with the seed) and the workdir exists
    dataset = load_dataset(args.dataset, config.data_dir, config.seed, config.data_options())
    arch = run_arch(config, dataset.image_shape[-1], dataset.num_classes)
    variables_template(arch)  # widths its numbers make impossible: one line, no workdir
    model = build_flax(arch)
    total = config.steps(len(dataset.train)).last
    progress = _Progress(total, args.progress)
    try:
        result = fit(
            model, dataset, config, workdir=args.workdir, resume=args.resume,
            overwrite=args.overwrite, override=args.override, mesh=mesh, on_log=progress,
        )  # fmt: skip
    finally:
        progress.close()
    if args.workdir is not None and result.history:
        _plot(read_metrics(args.workdir), args.workdir / CURVES_FILE)
    if args.export is not None:
        _export(result.state.variables, args.export, force=args.overwrite)
        print(f"exported PyTorch weights to {args.export}")
    if result.history:
        last = result.history[-1]
        print(f"final: val loss {last['val_loss']:.4f}, val acc {last['val_acc']:.4f}, "
              f"{result.train_seconds:.1f} s")  # fmt: skip
    else:
        print(f"nothing to train: the run in {args.workdir} is at step {int(result.state.step)}")
    return 0


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


def _demo(args: argparse.Namespace) -> int:
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


def _eval(args: argparse.Namespace) -> int:
    """Loss, top-1 and top-5 of a checkpoint on a dataset split, in JAX over every device;
    with ``--torch``, ``seres_torch`` on the same batches too."""
    from seres_jax.data import load_dataset
    from seres_jax.formats import check_destination, load_checkpoint
    from seres_jax.registry import build_flax, build_torch, variables_template
    from seres_jax.train import (
        CHECKPOINT_DIR,
        PRECISIONS,
        TrainConfig,
        evaluate_variables,
        find_run_config,
        run_arch,
    )

    if not args.src.exists():
        raise UsageError(f"{args.src}: no such file or directory")
    if args.json is not None:
        check_destination(args.json, force=args.force)
    if args.torch:
        _require_torch("eval --torch")
    run = find_run_config(args.src)
    stored = run[1]["config"] if run is not None else {}
    model = args.arch or stored.get("model")
    if model is None:
        raise UsageError(f"--arch is needed: {args.src} is not part of a `seres train` work "
                         "directory with a config.json naming its model")  # fmt: skip
    dataset_name: str = args.dataset or stored.get("dataset") or DEFAULT_DATASET

    # Preprocessing as the run trained (its overrides of the model's pretrained config), unless
    # the command line says otherwise.
    def chosen(flag: str) -> Any:
        value = getattr(args, flag)
        return value if value is not None else stored.get(flag)

    config = TrainConfig(
        model=model,
        dataset=dataset_name,
        data_dir=args.data_dir or stored.get("data_dir"),
        batch_size=args.batch_size or stored.get("batch_size") or 256,
        seed=stored.get("seed", 0),  # the digits split the run validated on
        precision=stored.get("precision", "fp32"),
        workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        augment=False,
        image_size=chosen("image_size"),
        crop_pct=chosen("crop_pct"),
        interpolation=chosen("interpolation"),
    )
    config.validate(1)
    dataset = load_dataset(dataset_name, config.data_dir, config.seed, config.data_options())
    arch = run_arch(config, dataset.image_shape[-1], dataset.num_classes)
    src = args.src / CHECKPOINT_DIR if (args.src / CHECKPOINT_DIR).is_dir() else args.src
    template = variables_template(arch)
    with _checked_against(src, arch):
        variables = load_checkpoint(src, template=template).to_variables(template)
    source = {"val": dataset.val, "train": dataset.train}[args.split]
    what = f"{arch} on the {dataset_name} {args.split} split ({len(source)} images)"
    progress = _ImageProgress(len(source), args.progress, "JAX")
    try:
        result = evaluate_variables(
            build_flax(arch, dtype=PRECISIONS.get(config.precision)), variables, dataset,
            config.batch_size, split=args.split, workers=config.workers, on_batch=progress,
        )  # fmt: skip
    finally:
        progress.close()
    print(f"{args.src}: {what}: top-1 {result['acc']:.4f}, top-5 {result['acc5']:.4f}, "
          f"loss {result['loss']:.4f}, {result['images_per_s']:.0f} images/s")  # fmt: skip
    report: dict[str, Any] = {
        "checkpoint": str(args.src), "arch": arch, "dataset": dataset_name,
        "split": args.split, "jax": result,
    }  # fmt: skip
    if args.torch:
        from seres_jax.convert import flax_to_state_dict, to_torch
        from seres_jax.parity import compare_on_data

        torch_model = build_torch(arch)
        state = flax_to_state_dict(variables)
        torch_model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
        progress = _ImageProgress(len(source), args.progress, "JAX and PyTorch")
        try:
            both = compare_on_data(torch_model, build_flax(arch), variables, dataset,
                                   config.batch_size, args.split, on_batch=progress)  # fmt: skip
        finally:
            progress.close()
        print(f"same batches in both: top-1 JAX {both.jax_top1:.4f}, PyTorch "
              f"{both.torch_top1:.4f}; identical argmax on {both.agreement:.2%} of "
              f"{both.count} images; largest logit difference "
              f"{both.max_logit_diff:.2e}")  # fmt: skip
        report["torch"] = both.to_dict()
    if args.json is not None:
        from seres_jax.formats import atomic_path

        with atomic_path(args.json, force=args.force) as tmp:
            tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


class _ImageProgress:
    """A tqdm bar over images, fed a batch at a time."""

    def __init__(self, total: int, enabled: bool, what: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", desc=what, disable=not enabled,
                        dynamic_ncols=True)  # fmt: skip

    def __call__(self, batch: int) -> None:
        self.bar.update(min(batch, self.bar.total - self.bar.n))  # the last batch is padded

    def close(self) -> None:
        self.bar.close()


def _data(args: argparse.Namespace) -> int:
    """``seres data pack``: an image folder as ArrayRecord shards."""
    from seres_jax.data import pack

    _warnings_to_stderr()
    manifest = pack(args.imagefolder, args.out_dir, shards=args.shards, force=args.force,
                    skip_bad_images=args.skip_bad_images)  # fmt: skip
    counts = ", ".join(f"{split} {info['count']} images in {len(info['shards'])} shards"
                       for split, info in manifest["splits"].items())  # fmt: skip
    print(f"{args.imagefolder} -> {args.out_dir}: {len(manifest['classes'])} classes; {counts}")
    return 0


def _convert(args: argparse.Namespace) -> int:
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


def _parity(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from seres_jax.convert import to_torch
    from seres_jax.formats import atomic_path, check_destination, load_checkpoint
    from seres_jax.parity import parity_report, randomize_batchnorm
    from seres_jax.registry import build_flax, build_torch, model_config, variables_template

    # Everything the user named is checked before any work, PyTorch's presence last.
    if args.json is not None:
        check_destination(args.json, force=args.force)
    spec, arguments = model_config(args.arch)
    try:
        device = jax.devices(args.device)[0] if args.device else None
    except RuntimeError:
        raise UsageError(f"JAX has no {args.device} device here") from None
    template = variables_template(args.arch)
    state = variables = None
    if args.checkpoint is not None:
        state = load_checkpoint(args.checkpoint, template=template).to_state_dict(template)
    if args.against is not None:
        variables = load_checkpoint(args.against, template=template).to_variables(template)
    torch = _require_torch("parity")
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    torch_model = build_torch(args.arch)
    if state is not None:
        torch_model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
    else:
        randomize_batchnorm(torch_model, args.seed)
    shape = (args.batch_size, arguments[spec.in_channels_arg], args.image_size, args.image_size)
    x = np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)
    report = parity_report(
        torch_model, build_flax(args.arch), x, variables=variables, arch=args.arch,
        device=device, seed=args.seed,
    )  # fmt: skip
    print(report.format())
    if args.json is not None:
        with atomic_path(args.json, force=args.force) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return 0 if report.ok else 1


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

    commands = {
        "train": _train, "eval": _eval, "demo": _demo, "convert": _convert, "parity": _parity,
        "data": _data,
    }  # fmt: skip
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
        return commands[args.command](args)
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
