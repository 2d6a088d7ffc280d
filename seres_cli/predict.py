"""``seres predict``: the top-k classes of image files, as timm's ``inference.py`` gives them.

``SOURCE`` is what ``seres eval`` takes: a ``seres train`` work directory (its latest checkpoint,
its architecture, validation preprocessing and, where its data is still there, class names), a
checkpoint in any format with ``--arch`` (the preprocessing of the weights ``--arch`` names), or
a timm model, ``hf-hub:ORG/NAME[@REV]`` or a ``local-dir:`` export (its ``config.json``: the
architecture, ``pretrained_cfg`` and ``label_names``). ``INPUTS`` are image files and
directories (recursively, sorted). The files stream through ``seres_jax.predict.Predictor``;
the first rows are printed as a table, every row goes to ``--results-file`` (csv, json or
jsonl: timm's columns ``filename``, ``index``, ``label``, ``prob``), and ``--torch`` runs
``seres_torch`` on the same batches and reports the agreement. Every refusal (a bad input, a
``--topk`` the model cannot give, an existing results file) comes before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    Subcommands,
    UsageError,
    _add_compile_cache,
    _add_image_arguments,
    _checked_against,
    _int_at_least,
    _require_torch,
    _warnings_to_stderr,
)

FORMATS = ("csv", "json", "jsonl")
DEFAULT_TOPK, SHOWN_ROWS = 5, 10
# The datasets whose runs read image files, and CIFAR-10's (32-pixel RGB).
_IMAGE_DATASETS = ("imagefolder", "arrayrecord", "cifar10")


def add_arguments(sub: Subcommands) -> None:
    p = sub.add_parser("predict", help="top-k classes of image files (timm's inference.py)")
    p.add_argument("src", metavar="SOURCE",
                   help="a `seres train` work directory, a checkpoint (with --arch), "
                   "hf-hub:ORG/NAME[@REV] or local-dir:DIR (a timm export)")  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files and directories (searched recursively, sorted)")  # fmt: skip
    p.add_argument("--arch", help="default: the work directory's config.json")
    p.add_argument("--topk", type=_int_at_least(1),
                   help=f"classes per image (default: {DEFAULT_TOPK}, or every class of a "
                   "model with fewer)")  # fmt: skip
    p.add_argument("--label-type", choices=("name", "index"),
                   help="name: a `label` column of class names (default where the model has "
                   "them); index: the class indices alone")  # fmt: skip
    p.add_argument("--output-type", choices=("prob", "logit"), default="prob",
                   help="the softmax probabilities (default) or the raw logits")  # fmt: skip
    p.add_argument("--results-file", type=Path, help="write every row here")
    p.add_argument("--results-format", choices=FORMATS,
                   help="default: the results file's suffix, else csv")  # fmt: skip
    p.add_argument(
        "--results-separate-col",
        action="store_true",
        help="one column per rank (index_0, label_0, prob_0, ...) instead of lists",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --results-file")
    p.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        help="images per batch, a multiple of the device count; the last batch "
        "runs at its own size (default: seres eval's, 16 at 224 px on a CPU)",
    )
    _add_image_arguments(p)
    p.add_argument(
        "--torch",
        action="store_true",
        help="also run seres_torch on the same batches and report the agreement",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_compile_cache(p)


@dataclass(frozen=True)
class _Source:
    """What ``SOURCE`` resolves to before any weights are read."""

    arch: str
    weights: Path  # the checkpoint to read
    data_config: Any  # seres_jax.data.DataConfig: the evaluation preprocessing
    class_names: tuple[str, ...] | None
    precision: str
    num_classes: int
    no_names: str | None = None  # why there are no class names, where a run has none


def run(args: argparse.Namespace) -> int:
    """Predict the top-k classes of ``args.inputs`` with ``args.src``; see the module docstring."""
    import jax

    from seres_jax.data.folders import plural
    from seres_jax.formats import check_destination, load_checkpoint
    from seres_jax.predict import find_images
    from seres_jax.registry import variables_template

    _warnings_to_stderr()
    fmt = _results_format(args)
    if args.results_file is not None:
        check_destination(args.results_file, force=args.force)
    if args.torch:
        _require_torch("predict --torch")
    source = _resolve(args)
    topk = args.topk if args.topk is not None else min(DEFAULT_TOPK, source.num_classes)
    if topk > source.num_classes:
        raise UsageError(f"--topk {topk}: {source.arch} has {source.num_classes} classes")
    if args.label_type == "name" and source.class_names is None:
        raise UsageError(
            f"--label-type name: {args.src} names no classes (a run whose data "
            "directory is gone, or a bare checkpoint); use --label-type index"
        )
    label_type = args.label_type or ("name" if source.class_names else "index")
    devices = jax.local_device_count()
    if args.batch_size is not None and args.batch_size % devices:
        raise UsageError(f"--batch-size {args.batch_size} is not a multiple of the {devices} "
                         "devices")  # fmt: skip
    files = find_images(args.inputs, skip_bad_images=args.skip_bad_images)
    if source.no_names is not None:
        print(f"seres: warning: {source.no_names}: labelled by index", file=sys.stderr)
    template = variables_template(source.arch)
    with _checked_against(source.weights, source.arch):
        variables = load_checkpoint(source.weights, template=template).to_variables(template)

    rows, agreement, predictor = _predict(args, source, variables, files, topk)
    names = source.class_names if label_type == "name" else None
    print(_table(rows[:SHOWN_ROWS], names, args.output_type))
    if len(rows) > SHOWN_ROWS:
        more = "" if args.results_file else " (--results-file F writes them all)"
        print(f"... and {len(rows) - SHOWN_ROWS} more{more}")
    skipped = f", {len(files.skipped)} skipped" if files.skipped else ""
    images = plural(len(rows), "image", "images")
    rate, compile_s = predictor.images_per_s, predictor.compile_s
    print(f"{args.src}: {source.arch} on {images}{skipped}: {rate:.1f} images/s, "
          f"compile {compile_s:.1f} s")  # fmt: skip
    if agreement is not None:
        print(f"PyTorch beside it: the same top-1 class on {agreement.top1_agreement:.2%} of "
              f"{plural(agreement.count, 'image', 'images')}; largest logit difference "
              f"{agreement.max_logit_diff:.2e} ({agreement.relative_logit_diff:.1e} of the "
              "largest logit)")  # fmt: skip
    if args.results_file is not None:
        from seres_jax.formats import atomic_path

        text = _results_text(rows, names, args.output_type, fmt, args.results_separate_col)
        with atomic_path(args.results_file, force=args.force) as tmp:
            tmp.write_text(text, encoding="utf-8", newline="")
        print(f"{len(rows)} rows -> {args.results_file} ({fmt})")
    return 0


def _results_format(args: argparse.Namespace) -> str:
    if args.results_format is not None:
        return str(args.results_format)
    suffix = args.results_file.suffix.lower().lstrip(".") if args.results_file else ""
    return suffix if suffix in FORMATS else "csv"


# --------------------------------------------------------------------------- the source


def _resolve(args: argparse.Namespace) -> _Source:
    """The architecture, weights, preprocessing and class names ``args.src`` stands for (the
    sources ``seres eval`` takes); no weights read yet."""
    from seres_jax.hub import is_hub, is_timm_dir, resolve_model
    from seres_jax.registry import data_config, model_config
    from seres_jax.train import CHECKPOINT_DIR, find_run_config

    overrides = (args.image_size, args.crop_pct, args.interpolation)
    if is_hub(args.src) or is_timm_dir(args.src):
        if args.arch is not None:
            raise UsageError(f"--arch: {args.src} names its architecture in its config.json; "
                             "leave --arch out")  # fmt: skip
        hub = resolve_model(args.src)
        assert hub is not None  # a hub name or a timm directory
        # timm's validate.py (and `seres eval`): the weights' test size unless one is named.
        config = hub.data_config.for_eval(
            *overrides, use_test_size=args.image_size is None and args.crop_pct is None
        )
        return _source(hub.arch, hub.weights, config, hub.label_names, "fp32")
    src = Path(args.src)
    if not src.exists():
        raise UsageError(f"{src}: no such file or directory")
    run = find_run_config(src)
    weights = src / CHECKPOINT_DIR if (src / CHECKPOINT_DIR).is_dir() else src
    if run is None:
        if args.arch is None:
            raise UsageError(f"--arch is needed: {src} is not part of a `seres train` work "
                             "directory with a config.json naming its model")  # fmt: skip
        model_config(args.arch)  # a bad --arch named before anything else
        return _source(args.arch, weights, data_config(args.arch).for_eval(*overrides), None,
                       "fp32")  # fmt: skip
    record = run[1]
    arch = args.arch or record.get("arch")
    if arch is None:
        raise UsageError(f"--arch is needed: {run[0]} names no architecture")
    config, names, why = _run_preprocessing(record, overrides, run[0])
    precision = str(record["config"].get("precision", "fp32"))
    return _source(arch, weights, config, names, precision, why)


def _source(
    arch: str,
    weights: Path,
    config: Any,
    names: Any,
    precision: str,
    why: str | None = None,
) -> _Source:
    from seres_jax.registry import model_config

    spec, arguments = model_config(arch)
    channels, classes = arguments[spec.in_channels_arg], int(arguments["num_classes"])
    if channels != 3:
        raise UsageError(f"{arch} takes {channels}-channel images; image files are RGB")
    if names is not None and len(names) != classes:
        why = f"{len(names)} class names for the {classes} classes of {arch}"
        names = None
    names = tuple(names) if names else None
    return _Source(arch, weights, config, names, precision, classes, why)


def _run_preprocessing(
    record: dict[str, Any], overrides: tuple[Any, Any, Any], path: Path
) -> tuple[Any, list[str] | None, str | None]:
    """A run's validation preprocessing (as it recorded it, else as its config resolves it)
    with the command line's size, crop and interpolation in its place, its class names (read
    from its data, where that still is) and, without them, why not."""
    import dataclasses

    from seres_jax.data import DataConfig
    from seres_jax.export import class_names, run_data_configs
    from seres_jax.train import TrainConfig

    stored = record["config"]
    dataset = stored.get("dataset")
    if dataset not in _IMAGE_DATASETS:
        raise UsageError(f"{path.parent}: a {dataset} run's model takes that dataset's arrays, "
                         "not image files")  # fmt: skip
    config = TrainConfig.from_record(stored)
    if dataset == "cifar10":  # its arrays are 32-pixel images, not resized or cropped
        validation = run_data_configs(config)[0]
    elif isinstance(record.get("data"), dict) and isinstance(record["data"].get("val"), dict):
        # As the run recorded it (the weights' own preprocessing where it started from some).
        known = {f.name for f in dataclasses.fields(DataConfig)}
        recorded = {k: v for k, v in record["data"]["val"].items() if k in known}
        try:
            validation = DataConfig(**recorded)
        except (TypeError, ValueError) as err:
            raise UsageError(f"{path}: data.val is not a preprocessing of seres ({err})") from None
    else:  # a run of an earlier seres, which recorded no preprocessing
        options = config.data_options()
        validation = options.val_config or options.data_config
    names, why = class_names(dataset, stored.get("data_dir"))
    return validation.for_eval(*overrides), names, f"no class names ({why})" if why else None


# --------------------------------------------------------------------------- the run


def _predict(
    args: argparse.Namespace, source: _Source, variables: Any, files: Any, topk: int
) -> tuple[list[dict[str, Any]], Any, Any]:
    """Every image's row (``filename``, ``index``, ``prob``/``logit``), the agreement with
    ``seres_torch`` (``--torch``; else ``None``) and the predictor (its timings)."""
    from seres_jax.predict import Agreement, Predictor
    from seres_jax.registry import build_flax
    from seres_jax.train import PRECISIONS
    from seres_jax.train.loop import default_eval_batch_size

    from .eval import _ImageProgress

    model = build_flax(source.arch, dtype=PRECISIONS.get(source.precision))
    predictor = Predictor(model, variables, source.data_config, topk=topk)
    size = source.data_config.input_size
    batch_size = args.batch_size or default_eval_batch_size((size, size, 3), len(files))
    torch_forward = _torch_forward(source.arch, variables) if args.torch else None
    agreement = Agreement() if args.torch else None
    rows: list[dict[str, Any]] = []
    progress = _ImageProgress(len(files), args.progress, "predict")
    try:
        batches = predictor(files, batch_size, workers=args.workers,
                            keep_inputs=args.torch, on_batch=progress)  # fmt: skip
        for batch in batches:
            if torch_forward is not None and agreement is not None:
                agreement.add(batch.logits, torch_forward(batch.inputs))
            scores = batch.probs if args.output_type == "prob" else _top_logits(batch)
            rows += [
                {"filename": name, "index": [int(i) for i in idx], "score": [float(s) for s in sc]}
                for name, idx, sc in zip(batch.names, batch.indices, scores, strict=True)
            ]
    finally:
        progress.close()
    return rows, agreement, predictor


def _top_logits(batch: Any) -> Any:
    import numpy as np

    return np.take_along_axis(batch.logits, batch.indices, axis=-1)


def _torch_forward(arch: str, variables: Any) -> Any:
    """``seres_torch``'s ``arch`` with ``variables``, in eval mode, as a function of an NHWC
    float32 batch to its logits (as ``seres eval --torch`` loads it)."""
    import numpy as np
    import torch

    from seres_jax.convert import flax_to_state_dict, to_torch
    from seres_jax.registry import build_torch

    model = build_torch(arch)
    state = flax_to_state_dict(variables)
    model.load_state_dict({k: to_torch(v) for k, v in state.items()}, strict=True)
    model.eval()

    def forward(images: Any) -> Any:
        with torch.inference_mode():
            nchw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
            return model(nchw).numpy()

    return forward


# --------------------------------------------------------------------------- the output


def _columns(
    row: dict[str, Any], names: tuple[str, ...] | None, output: str, separate: bool
) -> dict[str, Any]:
    """One result as timm's ``inference.py`` names its columns: ``filename``, ``index``,
    ``label`` (with class names), ``prob`` or ``logit``; lists of the top-k, or with
    ``separate`` one column per rank (``index_0``...)."""
    values = {"index": row["index"]}
    if names is not None:
        values["label"] = [names[i] for i in row["index"]]
    values[output] = row["score"]
    out: dict[str, Any] = {"filename": row["filename"]}
    for key, ranked in values.items():
        if separate:
            out.update({f"{key}_{rank}": value for rank, value in enumerate(ranked)})
        else:
            out[key] = ranked[0] if len(ranked) == 1 else ranked
    return out


def _results_text(
    rows: list[dict[str, Any]],
    names: tuple[str, ...] | None,
    output: str,
    fmt: str,
    separate: bool,
) -> str:
    """The results file: csv (lists as JSON arrays), json (timm's ``orient="index"``: an object
    per file name) or jsonl (one object per line)."""
    table = [_columns(row, names, output, separate) for row in rows]
    if fmt == "jsonl":
        return "".join(json.dumps(record) + "\n" for record in table)
    if fmt == "json":
        by_name = {r["filename"]: {k: v for k, v in r.items() if k != "filename"} for r in table}
        return json.dumps(by_name, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    for record in table:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in record.items()})
    return buffer.getvalue()


def _table(rows: list[dict[str, Any]], names: tuple[str, ...] | None, output: str) -> str:
    """The first results as a plain table: each file, then its classes, best first."""
    width = max([len("file"), *(len(r["filename"]) for r in rows)])

    def ranked(row: dict[str, Any]) -> str:
        return ", ".join(
            f"{names[i] if names is not None else i} {s:.3f}"
            for i, s in zip(row["index"], row["score"], strict=True)
        )

    header = f"{'file':<{width}}  top-{len(rows[0]['index'])} ({output})"
    return "\n".join([header, *(f"{r['filename']:<{width}}  {ranked(r)}" for r in rows)])
