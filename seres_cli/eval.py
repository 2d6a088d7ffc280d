"""``seres eval``: loss, top-1 and top-5 of a checkpoint on a dataset split, the architecture
and preprocessing read from the run's ``config.json``, or of a timm model on the Hugging Face
hub (``hf-hub:ORG/NAME[@REV]``), both read from its hub ``config.json``; with ``--torch``,
PyTorch on the same batches too."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .common import (
    DEFAULT_DATASET,
    Subcommands,
    UsageError,
    _add_compile_cache,
    _add_image_arguments,
    _checked_against,
    _int_at_least,
    _require_torch,
)


def add_arguments(sub: Subcommands) -> None:
    evaluate = sub.add_parser("eval", help="top-1/top-5 of a checkpoint on a dataset split")
    evaluate.add_argument("src", type=Path,
                          help="a `seres train` work directory (its latest checkpoint), a "
                          "checkpoint in any format, or hf-hub:ORG/NAME[@REV] (a timm model on "
                          "the hub)")  # fmt: skip
    evaluate.add_argument("--arch", help="default: the work directory's config.json")
    evaluate.add_argument("--dataset", help="default: the run's, else digits (needed with hf-hub:)")
    evaluate.add_argument("--data-dir", help="default: the run's")
    evaluate.add_argument("--split", choices=("val", "train"), default="val",
                          help="the split to evaluate: val is the held-out one (digits' and "
                          "cifar10's test split; default: %(default)s)")  # fmt: skip
    evaluate.add_argument(
        "--batch-size", type=_int_at_least(1),
        help="images per batch, a multiple of the device count; the last batch runs at its "
        "own size (default: on the CPU the largest power of two up to 256 whose activations "
        "stay within 1 GiB, estimated at 352 bytes per input value: 16 at 224x224x3, 256 at "
        "32x32x3; on a GPU or TPU 256; never more than the split holds)",
    )  # fmt: skip
    _add_image_arguments(evaluate)
    evaluate.add_argument("--torch", action="store_true",
                          help="also run seres_torch on the same batches and compare")  # fmt: skip
    evaluate.add_argument("--json", type=Path, help="also write the results as JSON here")
    evaluate.add_argument("--force", action="store_true", help="replace an existing --json file")
    evaluate.add_argument("--no-progress", dest="progress", action="store_false",
                          help="no progress bar")  # fmt: skip
    _add_compile_cache(evaluate)


def run(args: argparse.Namespace) -> int:
    """Loss, top-1 and top-5 of a checkpoint on a dataset split, in JAX over every device;
    with ``--torch``, ``seres_torch`` on the same batches too."""
    from seres_jax.data import DataConfig, load_dataset
    from seres_jax.formats import check_destination, load_checkpoint
    from seres_jax.hub import is_hub, is_timm_dir
    from seres_jax.registry import variables_template
    from seres_jax.train import CHECKPOINT_DIR, TrainConfig, find_run_config, run_arch

    if is_hub(args.src) or is_timm_dir(args.src):  # timm's config.json names the model
        return _run_hub(args)
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
        # The size and crop the run validated at, unless the command line names one.
        val_image_size=args.image_size or stored.get("val_image_size"),
        val_crop_pct=args.crop_pct or stored.get("val_crop_pct"),
    )
    config.validate(1)
    # A run's checkpoint is evaluated as the run validated it (the weights' test size by
    # default); a bare checkpoint as timm's `resolve_data_config({}, model=m)` does.
    options = config.data_options(val_at_test_size=run is not None)
    recorded = run[1].get("data") if run is not None else None
    if isinstance(recorded, dict) and not any(
        getattr(args, flag) is not None for flag in ("image_size", "crop_pct", "interpolation")
    ):
        # As the run recorded it trained and validated: a fine-tuned run's preprocessing is its
        # initial weights', which the config alone would resolve again from a source that
        # `seres eval` is not given (and that may be gone).
        train, val = DataConfig(**recorded["train"]), DataConfig(**recorded["val"])
        options = dataclasses.replace(
            options, data_config=train, val_config=val if val != train else None
        )
    dataset = load_dataset(dataset_name, config.data_dir, config.seed, options)
    arch = run_arch(config, dataset.image_shape[-1], dataset.num_classes)
    src = args.src / CHECKPOINT_DIR if (args.src / CHECKPOINT_DIR).is_dir() else args.src
    template = variables_template(arch)
    with _checked_against(src, arch):
        variables = load_checkpoint(src, template=template).to_variables(template)
    return _evaluate(args, arch, variables, dataset, dataset_name, args.batch_size,
                     config.precision, config.workers, {"checkpoint": str(args.src)})  # fmt: skip


def _run_hub(args: argparse.Namespace) -> int:
    """A timm model on the hub: its architecture and preprocessing from its ``config.json``
    (``seres_jax.hub``), evaluated as timm's ``validate.py`` evaluates it: at the weights' test
    size where they have one, unless the command line names a size or crop."""
    from seres_jax.data import DataOptions, load_dataset
    from seres_jax.formats import check_destination, load_checkpoint
    from seres_jax.hub import resolve_model
    from seres_jax.registry import model_config, variables_template

    source = str(args.src)
    if args.arch is not None:
        raise UsageError(f"--arch: {source} names its architecture in its config.json; leave "
                         "--arch out")  # fmt: skip
    if args.dataset is None:
        raise UsageError(f"--dataset is needed with {source} (e.g. --dataset imagefolder "
                         "--data-dir DIR)")  # fmt: skip
    if args.json is not None:
        check_destination(args.json, force=args.force)
    if args.torch:
        _require_torch("eval --torch")
    hub = resolve_model(source)
    assert hub is not None  # routed here for hf-hub: names and timm directories
    data_config = hub.data_config.for_eval(
        args.image_size, args.crop_pct, args.interpolation,
        use_test_size=args.image_size is None and args.crop_pct is None,
    )  # fmt: skip
    options = DataOptions(augment=False, data_config=data_config,
                          skip_bad_images=args.skip_bad_images)  # fmt: skip
    dataset = load_dataset(args.dataset, args.data_dir, 0, options)
    spec, arguments = model_config(hub.arch)
    channels, classes = arguments[spec.in_channels_arg], arguments["num_classes"]
    if dataset.image_shape[-1] != channels or dataset.num_classes != classes:
        raise UsageError(
            f"{source} takes {channels}-channel images of {classes} classes; the "
            f"{args.dataset} data has {dataset.image_shape[-1]} channels, "
            f"{dataset.num_classes} classes: fine-tune it for them (seres train)"
        )
    if hub.label_names and dataset.classes and tuple(dataset.classes) != hub.label_names:
        # Other names may still be the same classes in the same order (a renamed folder):
        # said, not refused.
        pairs = [(a, b) for a, b in zip(dataset.classes, hub.label_names, strict=True) if a != b]
        print(f"seres: warning: the {args.dataset} classes differ from {source}'s label_names "
              f"(first: {pairs[0][0]!r} vs {pairs[0][1]!r}); labels are matched by index",
              file=sys.stderr)  # fmt: skip
    template = variables_template(hub.arch)
    arch = f"{hub.arch} (from {source}'s config.json)"
    with _checked_against(hub.weights, arch):
        variables = load_checkpoint(hub.weights, template=template).to_variables(template)
    report = {"checkpoint": source, "repo_id": hub.repo_id, "commit": hub.commit,
              "weights": hub.weights.name}  # fmt: skip
    return _evaluate(args, hub.arch, variables, dataset, args.dataset,
                     args.batch_size, "fp32", args.workers, report)  # fmt: skip


def _evaluate(
    args: argparse.Namespace,
    arch: str,
    variables: Any,
    dataset: Any,
    dataset_name: str,
    batch_size: int | None,
    precision: str,
    workers: int,
    report: dict[str, Any],
) -> int:
    """Evaluate ``variables`` of ``arch`` on ``args.split`` in batches of ``batch_size``
    (``None``: ``default_eval_batch_size``'s) and with ``--torch`` PyTorch on the same batches,
    print the result and write ``--json``."""
    from seres_jax.registry import build_flax, build_torch
    from seres_jax.train import PRECISIONS, evaluate_variables
    from seres_jax.train.loop import default_eval_batch_size

    source = {"val": dataset.val, "train": dataset.train}[args.split]
    if batch_size is None:
        batch_size = default_eval_batch_size(dataset.image_shape, len(source))
    what = f"{arch} on the {dataset_name} {args.split} split ({len(source)} images)"
    progress = _ImageProgress(len(source), args.progress, "JAX")
    try:
        result = evaluate_variables(
            build_flax(arch, dtype=PRECISIONS.get(precision)), variables, dataset,
            batch_size, split=args.split, workers=workers, on_batch=progress,
        )  # fmt: skip
    finally:
        progress.close()
    # The steady rate; compiling (or loading from the cache) the batch shapes is said apart.
    print(f"{args.src}: {what}: top-1 {result['acc']:.4f}, top-5 {result['acc5']:.4f}, "
          f"loss {result['loss']:.4f}; {result['images_per_s']:.1f} images/s in batches of "
          f"{batch_size}, after {result['compile_s']:.1f} s compiling")  # fmt: skip
    report = {**report, "arch": arch, "dataset": dataset_name, "split": args.split,
              "batch_size": batch_size, "jax": result}  # fmt: skip
    if args.torch:
        from seres_jax.convert import flax_to_state_dict, to_torch
        from seres_jax.parity import compare_on_data

        torch_model = build_torch(arch)
        state = flax_to_state_dict(variables)
        torch_model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
        progress = _ImageProgress(len(source), args.progress, "JAX and PyTorch")
        try:
            both = compare_on_data(torch_model, build_flax(arch), variables, dataset,
                                   batch_size, args.split, on_batch=progress)  # fmt: skip
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
        # The last batch may hold padding rows (up to a multiple of the device count).
        self.bar.update(min(batch, self.bar.total - self.bar.n))

    def close(self) -> None:
        self.bar.close()
