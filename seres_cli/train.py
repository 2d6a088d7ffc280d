"""``seres train``: one ``TrainConfig`` from the flags named as its fields, ``fit``, the
curves and the optional PyTorch export; timm's ``args.yaml`` (``-c``) and the ResNet strikes back
recipes (``--recipe``) as the flags' defaults, the way timm's train.py reads its ``-c`` file
(``seres_cli.timm_args``); ``--print-config`` to see the result without running it."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import (
    DEFAULT_DATASET,
    DEFAULT_MODEL,
    Subcommands,
    UsageError,
    _add_compile_cache,
    _add_image_arguments,
    _checked_against,
    _export,
    _int_at_least,
    _Parser,
    _plot,
    _Progress,
    _warnings_to_stderr,
)


def add_arguments(sub: Subcommands) -> None:
    from seres_jax.data import DATASET_NAMES
    from seres_jax.optim import CLIP_MODES, SCHEDULE_NAMES, TIMM_OPTIMIZER_NAMES
    from seres_jax.train import PRECISIONS, TrainConfig

    p = sub.add_parser("train", help="train a model with optax", description=_DESCRIPTION)
    p.__class__ = _TrainParser  # argparse makes subparsers of the parent's class
    d = TrainConfig()  # one source of truth for the recipe's defaults
    _add_timm_arguments(p)
    # The flags named as TrainConfig's fields make the config (`run`); the others
    # (--workdir, --resume, --export, ...) steer the command.
    p.add_argument(
        "--model",
        help=f"architecture, e.g. seresnet_tiny or seresnet_tiny:base=16,n=3 (default: the "
        f"--initial-checkpoint's, else {DEFAULT_MODEL})",
    )
    _add_weights_arguments(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET, help=f"one of {', '.join(DATASET_NAMES)}")
    p.add_argument(
        "--data-dir",
        help="cifar10: its binary files; imagefolder: ROOT with train/ "
        "and val/ class directories; arrayrecord: `seres data pack`'s OUT_DIR",
    )
    _add_image_arguments(p)
    p.add_argument(
        "--epochs",
        type=int,
        default=d.epochs,
        help="epochs to train, or of a cyclic --sched's first cycle; default %(default)s "
        "(timm's: 300)",
    )
    p.add_argument(
        "-b",
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="global batch size of one optimizer update, all devices and "
        "accumulation steps together (timm's -b is per device and micro-batch)",
    )
    p.add_argument(
        "--opt",
        "--optimizer",
        dest="optimizer",
        default=d.optimizer,
        help=f"one of {', '.join(TIMM_OPTIMIZER_NAMES)} (timm's names; sgd is Nesterov SGD "
        "unless --no-nesterov)",
    )
    p.add_argument("--opt-eps", type=float, help="optimizer epsilon (default: the optimizer's)")
    p.add_argument(
        "--opt-betas",
        type=float,
        nargs=2,
        metavar=("B1", "B2"),
        help="adamw/lamb betas (default: 0.9 0.999)",
    )
    p.add_argument("--clip-grad", type=float, help="clip gradients at this value (default: off)")
    p.add_argument("--clip-mode", default=d.clip_mode, help=f"one of {', '.join(CLIP_MODES)}")
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate (default: {d.lr}, or from --lr-base; timm's "
        "default is --lr-base 0.1 scaled with the batch)",
    )
    p.add_argument(
        "--lr-base",
        type=float,
        help="without --lr: lr = lr-base x batch / lr-base-size (timm's rule)",
    )
    p.add_argument(
        "--lr-base-size",
        type=int,
        default=d.lr_base_size,
        help="the batch size --lr-base is for (default: %(default)s)",
    )
    p.add_argument(
        "--lr-base-scale",
        choices=("linear", "sqrt"),
        help="default: sqrt for adam*/lamb, linear otherwise (timm's)",
    )
    p.add_argument(
        "--momentum",
        type=float,
        default=d.momentum,
        help="momentum of --opt sgd, momentum, nesterov, lars, rmsproptf (default: %(default)s)",
    )
    p.add_argument(
        "--no-nesterov",
        dest="nesterov",
        action="store_false",
        help="--opt sgd with plain momentum, as --opt momentum (timm's sgd is Nesterov's)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help=f"default {d.weight_decay} (timm's: 2e-5); biases and BatchNorm "
        "parameters are not decayed, as in timm (see --decay-all)",
    )
    p.add_argument(
        "--decay-all",
        action="store_true",
        help="decay biases and BatchNorm parameters too (PyTorch's default)",
    )
    p.add_argument(
        "--schedule",
        default=d.schedule,
        help="seres' per-update schedule after warmup, torch.optim's (onecycle also cycles the "
        f"momentum, replacing --momentum): one of {', '.join(SCHEDULE_NAMES)}; --sched replaces "
        "it with timm's",
    )
    p.add_argument(
        "--warmup-epochs",
        type=float,
        default=d.warmup_epochs,
        help="epochs of linear warmup at the start of the run (a whole number with --sched, "
        f"as timm's); default {d.warmup_epochs} (timm's: 5)",
    )
    _add_sched_arguments(p, d)
    p.add_argument(
        "--smoothing",
        "--label-smoothing",
        dest="label_smoothing",
        type=float,
        default=d.label_smoothing,
        help="label smoothing (timm's default: 0.1)",
    )
    p.add_argument("--mixup", type=float, default=d.mixup, help="timm's mixup alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="timm's cutmix alpha (0: off)")
    p.add_argument(
        "--mixup-prob",
        "--mix-prob",
        dest="mix_prob",
        type=float,
        default=d.mix_prob,
        help="probability that a batch is mixed",
    )
    p.add_argument(
        "--mixup-switch-prob",
        type=float,
        default=d.mixup_switch_prob,
        help="probability of cutmix rather than mixup when both are on",
    )
    _add_regularisation_arguments(p, d)
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crop + flip (default: the dataset's: on for cifar10 (pad-crop-flip), "
        "imagefolder and arrayrecord (RandomResizedCrop))",
    )
    _add_augmentation_arguments(p, d)
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=sorted(PRECISIONS),
        help="bf16: bfloat16 compute, float32 parameters and optimizer state",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of everything random: initialisation, data order, augmentation, dropout, "
        "the digits split; default %(default)s (timm's: 42)",
    )
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
        help="start again in a --workdir holding a run (deleting its checkpoints, metrics, "
        "curves and TensorBoard files, nothing else); replace an existing --export file and "
        "the three files --export-dir writes",
    )
    p.add_argument("--export", type=Path, help="write the weights as a PyTorch .safetensors")
    p.add_argument(
        "--export-dir",
        type=Path,
        metavar="OUT_DIR",
        help="write the weights as timm writes a hub model (config.json with the run's data "
        "config and classes, model.safetensors, README.md): timm.create_model("
        '"local-dir:OUT_DIR", pretrained=True) loads it',
    )
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
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (the per-epoch lines still print)",
    )
    p.add_argument(
        "--log-tensorboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --workdir, also write the metrics as TensorBoard event files in "
        "WORKDIR/tensorboard (default: on)",
    )
    _add_compile_cache(p)


_DESCRIPTION = (
    "Train a model with optax. Every setting has a flag named as TrainConfig's field, mostly "
    "timm's train.py flag names. Precedence: built-in defaults < --recipe < -c args.yaml < "
    "command-line flags."
)


class _TrainParser(_Parser):
    """``seres train``'s parser. As timm's train.py does with its ``-c`` file, a ``-c
    args.yaml`` and a ``--recipe`` become the parser's defaults and the command line is parsed
    again over them, so that every flag given wins."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        first, extras = super().parse_known_args(argv, copy.copy(namespace))
        if first.config is None and first.recipe is None:
            return first, extras
        from .timm_args import resolve, unknown_warning

        timm = resolve(first.config, first.recipe)
        warning = unknown_warning(timm)
        if warning is not None:
            print(warning, file=sys.stderr)
        # batch_size None: computed in `run` from timm's per-device batch and the devices.
        self.set_defaults(**timm.flags, batch_size=None, timm=timm)
        return super().parse_known_args(argv, namespace)


def _add_timm_arguments(p: argparse.ArgumentParser) -> None:
    from .recipes import RECIPES

    g = p.add_argument_group(
        "timm recipes",
        "Precedence: built-in defaults < --recipe < -c args.yaml < command-line flags. A file's "
        "batch_size is timm's (per device and micro-batch): seres' batch per update is it x the "
        "devices x --grad-accum-steps; -b on the command line is the batch per update.",
    )
    g.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="ARGS_YAML",
        help="rerun a timm train.py run from the args.yaml it wrote: every key seres implements "
        "sets its flag; a key seres does not implement is refused unless at timm's default; "
        "keys seres does not know are ignored with a warning",
    )
    g.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="; ".join(r.summary for r in RECIPES.values()).replace("%", "%%")
        + " (arXiv:2110.00476, Table 1; ImageNet-style --data-dir; model seresnet50 unless "
        "--model)",
    )
    g.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration as JSON (as config.json records it, with the "
        "batch mapping) and exit: no data read, nothing written",
    )
    p.set_defaults(timm=None)


def _add_sched_arguments(p: argparse.ArgumentParser, d: Any) -> None:
    """timm's scheduler and its options (its names and defaults)."""
    from seres_jax.train.config import TIMM_SCHEDULES

    p.add_argument(
        "--sched",
        choices=TIMM_SCHEDULES,
        help="timm's scheduler, stepped per epoch (replaces --schedule; timm's default: cosine)",
    )
    p.add_argument(
        "--sched-on-updates",
        action="store_true",
        help="step --sched after every update instead of every epoch",
    )
    p.add_argument(
        "--warmup-lr",
        type=float,
        default=d.warmup_lr,
        help="--sched's lr at the start of --warmup-epochs, rising linearly to --lr "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--min-lr",
        type=float,
        default=d.min_lr,
        help="--sched's lowest lr: cosine/tanh/poly end and cool down at it, plateau decays "
        "no lower (default: %(default)s)",
    )
    p.add_argument(
        "--warmup-prefix",
        action="store_true",
        help="warm up before the schedule's epochs, not within them",
    )
    p.add_argument(
        "--cooldown-epochs",
        type=_int_at_least(0),
        default=d.cooldown_epochs,
        help="epochs at --min-lr after a cyclic schedule (added to --epochs)",
    )
    p.add_argument(
        "--decay-epochs",
        type=float,
        default=d.decay_epochs,
        help="--sched step: epochs between decays of the lr by --decay-rate (default: %(default)s)",
    )
    p.add_argument(
        "--decay-rate",
        "--dr",
        type=float,
        default=d.decay_rate,
        help="--sched step/multistep/plateau: the lr's factor at each decay; poly: the power "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--decay-milestones",
        type=int,
        nargs="+",
        default=list(d.decay_milestones),
        help="--sched multistep: the epochs (counted from 1) from which the lr is decayed "
        "once more by --decay-rate (default: 90 180 270)",
    )
    p.add_argument(
        "--lr-cycle-mul",
        type=float,
        default=d.lr_cycle_mul,
        help="--sched cosine/tanh/poly: each cycle's length is the previous one's x this "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--lr-cycle-decay",
        type=float,
        default=d.lr_cycle_decay,
        help="--sched cosine/tanh/poly: each cycle's peak lr is the previous one's x this "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--lr-cycle-limit",
        type=_int_at_least(1),
        default=d.lr_cycle_limit,
        help="--sched cosine/tanh/poly: cycles to train, the first --epochs long (default: "
        "%(default)s)",
    )
    p.add_argument(
        "--lr-k-decay",
        type=float,
        default=d.lr_k_decay,
        help="--sched cosine/poly: k-decay, the cycle's position t/T taken as t**k/T**k "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--patience-epochs",
        type=_int_at_least(0),
        default=d.patience_epochs,
        help="--sched plateau: epochs without a better --eval-metric tolerated before the lr "
        "decays by --decay-rate (default: %(default)s)",
    )
    p.add_argument(
        "--eval-metric",
        choices=("top1", "top5", "loss"),
        default=d.eval_metric,
        help="what --sched plateau watches (the EMA's with --model-ema)",
    )


def _add_regularisation_arguments(p: argparse.ArgumentParser, d: Any) -> None:
    """timm's loss, accumulation, stochastic depth, dropout and EMA flags (its names)."""
    p.add_argument(
        "--grad-accum-steps",
        type=int,
        default=d.grad_accum_steps,
        help="micro-batches per optimizer update (BatchNorm and mixup per "
        "micro-batch, as timm); --batch-size is their total",
    )
    p.add_argument(
        "--bce-loss",
        action="store_true",
        help="timm's BinaryCrossEntropy on the (mixed, smoothed) targets",
    )
    p.add_argument(
        "--bce-target-thresh", type=float, help="binarise BCE targets above this threshold"
    )
    p.add_argument("--bce-sum", action="store_true", help="sum the BCE over the classes")
    p.add_argument("--bce-pos-weight", type=float, help="BCE weight of positive targets")
    p.add_argument(
        "--drop-path",
        type=float,
        help="stochastic depth rate, timm's per-block linear rule (zoo models)",
    )
    p.add_argument("--drop", type=float, help="dropout rate before the classifier")
    p.add_argument(
        "--model-ema",
        action="store_true",
        help="keep timm's ModelEmaV3 of the weights, evaluated each epoch; --export then writes it",
    )
    p.add_argument(
        "--model-ema-decay",
        type=float,
        default=d.model_ema_decay,
        help="--model-ema's decay per optimizer update (default: %(default)s)",
    )
    p.add_argument(
        "--model-ema-warmup",
        action="store_true",
        help="timm's EMA warmup: decay 1 - (1 + step) ** -2/3, capped",
    )
    p.add_argument(
        "--val-image-size",
        type=_int_at_least(1),
        help="per-epoch evaluation size (default: the weights' test size, else the training size)",
    )
    p.add_argument("--val-crop-pct", type=float, help="per-epoch evaluation crop")


def _add_weights_arguments(p: argparse.ArgumentParser) -> None:
    """timm's flags for the starting weights and the head and stem they are adapted to."""
    p.add_argument(
        "--initial-checkpoint",
        metavar="SRC",
        help="start from these weights: a .pt/.pth/.safetensors/.msgpack file, an orbax "
        "directory, a seres work directory, a timm directory (local-dir:PATH) or "
        "hf-hub:ORG/NAME[@REV] (the optimizer starts "
        "fresh; a classifier of another class count is re-initialised)",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="start from the hub weights of --model's tag (seresnet50.a1_in1k -> "
        "hf-hub:timm/seresnet50.a1_in1k), as timm",
    )
    p.add_argument(
        "--num-classes",
        type=_int_at_least(1),
        help="classes of the head (default: the dataset's; timm's: the model's 1000)",
    )
    p.add_argument(
        "--in-chans",
        type=_int_at_least(1),
        help="input channels (the dataset's; 3-channel weights are adapted as timm's "
        "adapt_input_conv)",
    )


def _repeats(text: str) -> int:
    """``--aug-repeats``: a whole number >= 1, as timm writes it too (``3`` or ``3.0``); no
    repeated augmentation is the flag left out (a file's ``aug_repeats: 0`` is the default)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if not (value.is_integer() and value >= 1):
        raise argparse.ArgumentTypeError(
            f"must be a whole number >= 1 (leave it out for no repeated augmentation), got {text}"
        )
    return int(value)


def _add_augmentation_arguments(p: argparse.ArgumentParser, d: Any) -> None:
    """timm's training transform, random erasing and repeated augmentation (its names; image
    datasets)."""
    from seres_jax.train.config import ERASE_MODES

    p.add_argument(
        "--color-jitter",
        type=float,
        default=d.color_jitter,
        help="brightness/contrast/saturation jitter (timm's default: 0.4); off with --aa "
        "unless the string has '3a', as in timm",
    )
    p.add_argument(
        "--color-jitter-prob",
        type=float,
        help="apply the jitter with this probability (default: always)",
    )
    p.add_argument(
        "--grayscale-prob",
        type=float,
        default=d.grayscale_prob,
        help="probability of turning a training image greyscale (default: %(default)s)",
    )
    p.add_argument(
        "--aa",
        help="timm's RandAugment (e.g. rand-m9-mstd0.5-inc1) or AutoAugment "
        "(original, originalr, v0, v0r) policy (default: none)",
    )
    p.add_argument(
        "--reprob",
        type=float,
        default=d.reprob,
        help="random erasing probability, after normalisation on the device (default: 0)",
    )
    p.add_argument("--remode", choices=ERASE_MODES, default=d.remode, help="erasing fill")
    p.add_argument("--recount", type=int, default=d.recount, help="erased boxes per image, at most")
    p.add_argument(
        "--resplit",
        action="store_true",
        help="timm's: no erasing on the first split (no effect without augmentation splits)",
    )
    p.add_argument(
        "--aug-repeats",
        type=_repeats,
        default=d.aug_repeats,
        metavar="N",
        help="repeated augmentation: each image N >= 1 times per epoch, spread over the "
        "processes (timm's RepeatAugSampler; default: off)",
    )
    p.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=list(d.scale),
        metavar=("LOW", "HIGH"),
        help="RandomResizedCrop's range of the crop's share of the image area (default: 0.08 1.0)",
    )
    p.add_argument(
        "--ratio",
        type=float,
        nargs=2,
        default=list(d.ratio),
        metavar=("LOW", "HIGH"),
        help="RandomResizedCrop's range of the crop's aspect ratio, width / height "
        "(default: 3/4 4/3)",
    )
    p.add_argument("--hflip", type=float, default=d.hflip, help="horizontal flip probability")
    p.add_argument("--vflip", type=float, default=d.vflip, help="vertical flip probability")
    p.add_argument(
        "--train-interpolation",
        help="random, or a PIL filter name (default: the model's interpolation; timm's: random)",
    )


def _timm_batch(args: argparse.Namespace, fields: dict[str, Any], devices: int) -> str | None:
    """Set ``fields["batch_size"]`` from a ``-c`` file or ``--recipe`` unless ``-b`` was given:
    a file's batch_size is timm's, per device and micro-batch (seres' batch per update is it x
    the devices x the accumulation steps); a recipe's is the paper's batch per update. Returns
    the line that says so for a per-device batch."""
    from .timm_args import batch_note

    timm = args.timm
    if fields["batch_size"] is not None:
        return None
    if timm.per_device is None:
        fields["batch_size"] = timm.global_batch
        return None
    accum = max(fields["grad_accum_steps"], 1)
    fields["batch_size"] = timm.per_device * devices * accum
    return batch_note(timm.label, timm.per_device, devices, accum)


def _unused_zero_rates(fields: dict[str, Any]) -> None:
    """A dropout or stochastic-depth rate of 0 (timm's train.py always passes --drop 0) on a
    model without that layer is the model itself, not an error."""
    from seres_jax.registry import MODELS, parse_arch

    name, _ = parse_arch(fields["model"])  # validates the name before anything is read
    accepted = MODELS[name].arguments()
    for flag, argument in (("drop", "drop_rate"), ("drop_path", "drop_path_rate")):
        if fields[flag] == 0 and argument not in accepted:
            fields[flag] = None


def _weights_source(fields: dict[str, Any]) -> tuple[str, Path] | None:
    """The run's starting weights, ``(name, local path)``: ``--initial-checkpoint`` (an
    ``hf-hub:`` name resolved in the hub cache) or ``--pretrained`` (the hub weights of the
    model's tag). The model defaults to the weights' architecture (the hub's ``config.json``,
    a work directory's), its head and stem left to the data."""
    from seres_jax.hub import pretrained_source, resolve_model
    from seres_jax.registry import format_arch, parse_arch
    from seres_jax.train import find_run_config

    source = fields["initial_checkpoint"]
    if fields["pretrained"]:
        if source:
            raise UsageError("--pretrained and --initial-checkpoint exclude each other")
        source = pretrained_source(fields["model"] or DEFAULT_MODEL)
    if not source:
        if fields["model"] is None:
            fields["model"] = DEFAULT_MODEL
        return None
    timm_model = resolve_model(source)  # hf-hub: or a directory timm's save_for_hf wrote
    arch: str | None
    if timm_model is not None:
        path, arch = timm_model.weights, timm_model.arch
    else:
        path = Path(source)
        if not path.exists():
            raise UsageError(f"--initial-checkpoint {source}: no such file or directory")
        run = find_run_config(path)
        arch = run[1].get("arch") if run is not None else None
    if fields["model"] is None:
        if arch is None:
            fields["model"] = DEFAULT_MODEL
        else:  # the weights' architecture; its classes and channels are the run's
            name, overrides = parse_arch(arch)
            drop = {"num_classes", "in_ch", "in_chans"}
            kept = {k: v for k, v in overrides.items() if k not in drop}
            fields["model"] = format_arch(name, kept) if kept else name
    return source, path


def _initial_weights(
    weights: tuple[str, Path], arch: str, model: Any, dataset: Any, config: Any
) -> Any:
    """The weights on the run's model (``seres_jax.train.initial_weights``), said in a line."""
    from seres_jax.train import init_variables
    from seres_jax.train.initial import initial_weights

    name, path = weights
    fresh = init_variables(model, dataset.image_shape, config.seed)
    with _checked_against(Path(name), arch):
        start = initial_weights(path, fresh, name=name)
    line = f"initial weights: {name} (sha256 {start.sha256[:12]}…)"
    if start.reinitialised:
        line += f"; classifier {', '.join(start.reinitialised)} re-initialised"
    if start.adapted:
        line += f"; {', '.join(start.adapted)} adapted to {dataset.image_shape[-1]} channels"
    print(line)
    return start


def _export_dir(args: argparse.Namespace, result: Any, arch: str, config: Any, data: Any) -> None:
    """``--export-dir``: the run's weights (its EMA's when it keeps one, as timm) as timm's
    hub layout, with the configuration ``fit`` recorded and the card of its epochs."""
    from seres_jax.export import export_trained
    from seres_jax.train import find_run_config

    from .export import train_command

    ema = result.state.ema_state
    recorded = dataclasses.replace(config.resolved(), dataset=data.name, augment=config.augments)
    run = find_run_config(args.workdir) if args.workdir is not None else None
    report = export_trained(
        (ema or result.state).variables, arch, recorded, args.export_dir,
        history=result.history, ema=ema is not None, record=None if run is None else run[1],
        command=train_command(dataclasses.asdict(recorded)), label_names=data.classes,
        force=args.overwrite, protect=() if args.workdir is None else (args.workdir,),
    )  # fmt: skip
    for note in report.notes:
        print(f"seres: warning: {note}", file=sys.stderr)
    which = "the EMA weights" if ema is not None else "the trained weights"
    print(f"exported {which} in timm's layout to {args.export_dir}")


def _printed_config(config: Any, note: str | None, devices: int) -> dict[str, Any]:
    """What ``--print-config`` prints: the config as the run's config.json would record it
    (its lr resolved, its augmentation decided) and how its batch splits."""
    recorded = dataclasses.replace(config.resolved(), augment=config.augments)
    accum = max(recorded.grad_accum_steps, 1)
    batch = {
        "per_update": recorded.batch_size,
        "devices": devices,
        "grad_accum_steps": accum,
        "per_device": recorded.batch_size // (devices * accum),
        "note": note,
    }
    return {"config": dataclasses.asdict(recorded), "batch": batch}


def run(args: argparse.Namespace) -> int:
    from seres_jax.data import load_dataset
    from seres_jax.registry import build_flax, variables_template
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
    if args.export_dir is not None:
        from seres_jax.export import check_export_dir

        if args.export_dir.is_dir() and not args.overwrite:  # the library's message says --force
            raise UsageError(
                f"--export-dir {args.export_dir} exists; pass --overwrite to replace its "
                "model.safetensors, config.json and README.md (nothing else)"
            )
        protect = () if args.workdir is None else (args.workdir,)
        check_export_dir(args.export_dir, force=args.overwrite, protect=protect)
    if args.resume and args.workdir is None:
        raise UsageError("--resume needs --workdir")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.override and not args.resume:
        raise UsageError("--override goes with --resume")
    _warnings_to_stderr()
    initialize_distributed()
    mesh = make_mesh()
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    weights = _weights_source(fields)
    note = _timm_batch(args, fields, mesh.size)
    _unused_zero_rates(fields)
    if fields["opt_betas"] is not None:
        fields["opt_betas"] = tuple(fields["opt_betas"])
    fields["decay_milestones"] = tuple(fields["decay_milestones"])
    fields["scale"], fields["ratio"] = tuple(fields["scale"]), tuple(fields["ratio"])
    if not float(fields["aug_repeats"]).is_integer():
        raise UsageError(f"--aug-repeats takes a whole number, got {fields['aug_repeats']}")
    fields["aug_repeats"] = int(fields["aug_repeats"])
    if fields["lr"] is None and fields["lr_base"] is None:
        fields["lr"] = TrainConfig.lr  # seres' default; timm's is --lr-base 0.1, scaled
    config = TrainConfig(**fields)
    config.validate(mesh.size)  # before the data is read (with the seed) and the workdir exists
    if args.print_config:
        print(json.dumps(_printed_config(config, note, mesh.size), indent=2))
        return 0
    if note is not None:
        print(note)
    dataset = load_dataset(args.dataset, config.data_dir, config.seed, config.data_options())
    arch = run_arch(config, dataset.image_shape[-1], dataset.num_classes)
    variables_template(arch)  # widths its numbers make impossible: one line, no workdir
    model = build_flax(arch)
    start = None if weights is None else _initial_weights(weights, arch, model, dataset, config)
    total = config.steps(len(dataset.train)).last
    progress = _Progress(total, args.progress)
    try:
        result = fit(
            model, dataset, config, workdir=args.workdir, resume=args.resume,
            overwrite=args.overwrite, override=args.override, mesh=mesh, on_log=progress,
            tensorboard=args.log_tensorboard and args.workdir is not None,
            variables=None if start is None else start.variables,
            initial=None if start is None else start.record(),
        )  # fmt: skip
    finally:
        progress.close()
    if args.workdir is not None and result.history:
        _plot(read_metrics(args.workdir), args.workdir / CURVES_FILE)
    if args.export is not None:
        ema = result.state.ema_state  # timm exports the EMA when a run keeps one
        _export((ema or result.state).variables, args.export, force=args.overwrite)
        which = "the EMA weights" if ema is not None else "the trained weights"
        print(f"exported {which} as PyTorch weights to {args.export}")
    if args.export_dir is not None:
        _export_dir(args, result, arch, config, dataset)
    if result.history:
        last = result.history[-1]
        print(f"final: val loss {last['val_loss']:.4f}, val acc {last['val_acc']:.4f}, "
              f"{result.train_seconds:.1f} s")  # fmt: skip
    else:
        print(f"nothing to train: the run in {args.workdir} is at step {int(result.state.step)}")
    return 0
