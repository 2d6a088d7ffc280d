"""The command line (``python benchmarks/bench.py --help``) and the run: every requested
measurement in its own child process, then ``results.json`` and ``results.md``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .augment_pipeline import (
    TIMM_PYTHON_ENV,
    augment_markdown,
    augment_worker,
    run_augment_pipeline,
    timm_python,
)
from .configs import (
    AUGMENT_ROUNDS,
    CONFIGS,
    CONVERT_ARCH,
    DEFAULT_CONFIGS,
    DEFAULT_IMPLS,
    DEVICES,
    IMPLS,
    JAX_IMPLS,
    NNX_DESIGN_MODELS,
    QUICK,
    RECIPE_MODELS,
)
from .data_bench import data_markdown, run_data_benchmarks
from .eval_cost import bench_section as eval_cost_section
from .eval_cost import section_markdown as eval_cost_markdown
from .machine import loadavg
from .nnx_design import design_worker, nnx_design_markdown, run_nnx_design
from .predict_bench import (
    PREDICT,
    PREDICT_QUICK,
    TIMM_INFERENCE_ENV,
    predict_markdown,
    run_predict_bench,
)
from .recipe_overhead import recipe_markdown, run_recipe_overhead
from .report import (
    SECTIONS,
    add_ratios,
    empty_entry,
    fill_compile_cache,
    fill_entry,
    merge_results,
    render_markdown,
    section_header,
    sgd_recipe,
)
from .worker import WORKERS, run_worker, worker_env, worker_main

HERE = Path(__file__).resolve().parents[1]
# The child processes' kinds: worker.py's, the augmented-pipeline section's seres side and the
# NNX design section's child (modules that import worker.py, so it cannot import them).
WORKER_KINDS = {**WORKERS, "augment": augment_worker, "nnx_design": design_worker}


def _log(message: str) -> None:
    # Progress goes to stderr so stdout carries the Markdown table alone.
    print(message, file=sys.stderr, flush=True)


def _csv(valid: tuple[str, ...] | list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown or empty {unknown or text!r}; choose from {', '.join(valid)}"
            )
        return names

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _opt_in(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    *,
    prefix: str,
    rounds: int | None,
    rounds_help: str,
    models: Iterable[str] = (),
    section: str = "",
) -> None:
    """An opt-in section's flags: ``flag`` turning it on, ``--PREFIX-models`` (where it has
    ``models``: all of them by default) and ``--PREFIX-rounds``."""
    parser.add_argument(flag, action="store_true", help=help)
    names = list(models)
    if names:
        parser.add_argument(
            f"--{prefix}-models",
            type=_csv(names),
            default=names,
            help=f"the {section} section's models (default: {','.join(names)})",
        )
    parser.add_argument(f"--{prefix}-rounds", type=_positive, default=rounds, help=rounds_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Throughput, first-call time and peak memory of the seres SE-ResNets in "
        "JAX (linen and NNX), PyTorch eager and torch.compile, the weight converter's speed, "
        "and on an image folder the input pipeline against a torch DataLoader and seres eval "
        "against seres_torch (opt-in: timm's recipe pieces in the JAX step; the pipeline with "
        "RandAugment and random erasing against timm's own DataLoader; the ways to jit the NNX "
        "training step; what `seres eval` costs; `seres predict` against timm's inference.py).",
    )
    parser.add_argument(
        "--configs",
        type=_csv(list(CONFIGS)),
        default=list(DEFAULT_CONFIGS),
        help=f"comma-separated configurations of {','.join(CONFIGS)} "
        f"(default: {','.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument(
        "--impls",
        type=_csv(IMPLS),
        default=list(DEFAULT_IMPLS),
        help=f"comma-separated implementations of {','.join(IMPLS)}; jax is the linen model, "
        f"jax_nnx its Flax NNX twin (default: {','.join(DEFAULT_IMPLS)})",
    )
    parser.add_argument("--repeats", type=_positive, default=5, help="timed repetitions (5)")
    parser.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="steps per repetition (default: each configuration's own, sized for 2 CPU cores)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps after the first call (1)"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="JAX platform; torch uses CUDA on gpu and is skipped on tpu (default: cpu)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 compute, float32 params (JAX: dtype=bfloat16; torch: autocast, CUDA only)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 repetition of 2 steps, batch 8, converter 1 repetition",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="JSON output")
    parser.add_argument(
        "--markdown", type=Path, default=HERE / "results.md", help="Markdown output"
    )
    parser.add_argument("--skip-convert", action="store_true", help="skip the converter")
    parser.add_argument(
        "--skip-compile-cache",
        action="store_true",
        help="skip JAX's first step with a cold and a warm persistent compilation cache",
    )
    parser.add_argument("--skip-models", action="store_true", help="skip the model configurations")
    parser.add_argument(
        "--skip-pipeline",
        action="store_true",
        help="skip the input pipeline against a torch DataLoader",
    )
    parser.add_argument(
        "--skip-eval", action="store_true", help="skip seres eval against seres_torch"
    )
    _opt_in(
        parser,
        "--recipe-overhead",
        "also measure the JAX training step with timm's recipe pieces (EMA, drop path, "
        "gradient accumulation) against the baseline; ~20 minutes on 2 CPU cores",
        prefix="recipe",
        models=RECIPE_MODELS,
        section="recipe-overhead",
        rounds=3,
        rounds_help="recipe overhead: child processes per variant, the order reversed each "
        "round (3)",
    )
    parser.add_argument(
        "--recipe-budget",
        type=float,
        default=60.0,
        help="recipe overhead: seconds of timed repetitions per child; they stop once past it "
        "(at least one), and a variant so cut runs one round only (60; 0: no limit)",
    )
    _opt_in(
        parser,
        "--augment-pipeline",
        "also measure the input pipeline with timm's RandAugment and random erasing against "
        "a DataLoader running timm's create_transform (needs --timm-python); ~5 minutes on 2 CPU "
        "cores",
        prefix="augment",
        rounds=AUGMENT_ROUNDS,
        rounds_help="augmented pipeline: child processes per side and worker count, the sides' "
        f"order reversed each round ({AUGMENT_ROUNDS})",
    )
    parser.add_argument(
        "--timm-python",
        default=None,
        help="augmented pipeline and predict: a Python interpreter with timm, torch and "
        f"torchvision (and pandas, for predict), which runs timm's side (default: "
        f"${TIMM_PYTHON_ENV}; neither: the augmented pipeline skips timm's side, predict "
        "measures seres_torch in its place)",
    )
    _opt_in(
        parser,
        "--nnx-design",
        "also measure the ways to jit the NNX training step (nnx.jit, nnx.cached_partial, "
        "seres_jax.nnx.train.compile_steps) against the linen step: step time, first call, "
        "dispatch time, compiled size; ~5 minutes on 2 CPU cores",
        prefix="nnx-design",
        models=NNX_DESIGN_MODELS,
        section="NNX design",
        rounds=None,
        rounds_help="NNX design: rounds of one step per variant (default: each model's own)",
    )
    parser.add_argument(
        "--eval-cost",
        action="store_true",
        help="also measure what `seres eval` costs a user (wall time, peak RSS, images/s, "
        "compilation; seresnet50 at 224 on 15 and 1,000 photographs, one process per case, "
        "--torch included); ~2 minutes on 2 CPU cores, twice that with --eval-cost-before "
        "(--quick: the first case only)",
    )
    parser.add_argument(
        "--eval-cost-before",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="eval cost: also run every case with the seres of this checkout (e.g. `git "
        "archive` of an earlier commit), for before/after figures from one machine",
    )
    _opt_in(
        parser,
        "--predict",
        "also measure `seres predict` end to end against timm's inference.py (without "
        "--timm-python and --timm-inference: seres_torch with the same preprocessing) on "
        f"folders of {' and '.join(map(str, PREDICT['sizes']))} photographs, the same weights "
        f"(--quick: {' and '.join(map(str, PREDICT_QUICK['sizes']))})",
        prefix="predict",
        rounds=3,
        rounds_help="predict: rounds of both sides on every folder, the order alternating (3)",
    )
    parser.add_argument(
        "--timm-inference",
        default=None,
        metavar="PATH",
        help="predict: timm's inference.py (a pytorch-image-models checkout's; not in timm's "
        f"wheel) (default: ${TIMM_INFERENCE_ENV})",
    )
    parser.add_argument(
        "--only",
        type=_csv(SECTIONS),
        default=None,
        help=f"measure only these sections of {','.join(SECTIONS)} and merge them into the "
        "existing --json file (its other sections are kept; --markdown shows them all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="synthetic data and init seed")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds allowed per child process"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def run_benchmarks(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested measurement, each in its own child process; returns the results."""
    repeats = QUICK["repeats"] if args.quick else args.repeats
    warmup = QUICK["warmup"] if args.quick else args.warmup
    header = section_header()
    machine = header["machine"]
    machine["accelerators"] = {}
    results: dict[str, Any] = {
        "schema": 1,
        **header,
        "settings": {
            "device": args.device,
            "bf16": args.bf16,
            "quick": args.quick,
            "repeats": repeats,
            "warmup": warmup,
            "seed": args.seed,
            "caches": "cold: fresh TORCHINDUCTOR_CACHE_DIR/TRITON_CACHE_DIR per child, "
            "JAX_COMPILATION_CACHE_DIR unset",
            "compile_cache": "jax only, enabled as seres' commands enable it "
            "(seres_jax.compiler.enable_compile_cache, JAX's thresholds): cold = a child "
            "compiling into an empty directory, warm = a second child with the same directory; "
            "first training and inference call timed",
            "recipe": sgd_recipe(),
            "torch_compile": "torch.compile(model), default mode; loss, backward and the "
            "optimizer step run eagerly around it",
            "jax": {},
            "torch": {},
        },
        "configs": {},
    }
    with tempfile.TemporaryDirectory(prefix="seres-bench-") as tmp:
        for name in [] if args.skip_models else args.configs:
            config = CONFIGS[name]
            batch = min(config.batch, QUICK["batch"]) if args.quick else config.batch
            steps = QUICK["steps"] if args.quick else (args.steps or config.steps)
            entry = empty_entry(name, config, batch, steps)
            model_spec = {
                "kind": "model",
                "arch": config.arch,
                "image_size": config.image_size,
                "batch": batch,
                "steps": steps,
                "repeats": repeats,
                "warmup": warmup,
                "device": args.device,
                "bf16": args.bf16,
                "seed": args.seed,
            }
            for impl in IMPLS:
                if impl not in args.impls:
                    entry["skipped"][impl] = "not in --impls"
                    continue
                if args.device == "tpu" and impl not in JAX_IMPLS:
                    entry["skipped"][impl] = "--device tpu measures JAX only"
                    continue
                spec = {**model_spec, "impl": impl}
                _log(f"[{name}] {impl}: batch {batch}, {repeats} x {steps} steps ...")
                cache = Path(tmp) / f"{name}-{impl}"
                env = worker_env("model", impl, args.device, cache)
                start = time.perf_counter()
                result = run_worker(spec, env, args.timeout)
                fill_entry(entry, impl, result)
                train = entry["train_img_s"][impl]
                status = f"train {train:.1f} img/s" if train else "no train number"
                if impl in entry["errors"]:
                    status += " (with errors)"
                _log(f"[{name}] {impl}: {status}, {time.perf_counter() - start:.0f} s")
                if "info" in result:
                    framework = "jax" if impl in JAX_IMPLS else "torch"
                    results["settings"][framework].update(result["info"])
                    info = result["info"]
                    device_name = info.get("device_kind") or info.get("device_name")
                    if args.device != "cpu":
                        machine["accelerators"][framework] = device_name
            if "jax" in args.impls and not args.skip_compile_cache:
                _measure_compile_cache(entry, name, model_spec, args, Path(tmp))
            add_ratios(entry)
            results["configs"][name] = entry

        if not args.skip_convert:
            _log(f"[convert] {CONVERT_ARCH}, median of {repeats} ...")
            spec = {"kind": "convert", "arch": CONVERT_ARCH, "repeats": repeats}
            env = worker_env("convert", None, args.device, Path(tmp) / "convert")
            results["converter"] = conv = run_worker(spec, env, args.timeout)
            if "fatal" not in conv:
                mb_s = conv["mb_s"]
                _log(f"[convert] {conv['params']:,} parameters, {conv['bytes'] / 1e6:,.0f} MB")
                shared = {
                    "convert_mb_s": mb_s["torch_to_flax"],
                    "convert_back_mb_s": mb_s["flax_to_state_dict"],
                    "memcpy_mb_s": mb_s["copy"],
                    "convert_vs_memcpy": mb_s["torch_to_flax"] / mb_s["copy"],
                    "convert_back_vs_memcpy": mb_s["flax_to_state_dict"] / mb_s["copy"],
                }
                results.update(shared)
                # The issue asks for the converter numbers in every configuration's entry
                # too; they are shared (the converter does not depend on the configuration).
                for entry in results["configs"].values():
                    entry["convert_mb_s"] = shared["convert_mb_s"]
                    entry["memcpy_mb_s"] = shared["memcpy_mb_s"]
            else:
                _log(f"[convert] error: {conv['fatal'].splitlines()[0]}")
        if not (args.skip_pipeline and args.skip_eval):
            run_data_benchmarks(
                results,
                pipeline=not args.skip_pipeline,
                evaluation=not args.skip_eval,
                quick=args.quick,
                repeats=repeats,
                device=args.device,
                seed=args.seed,
                timeout=args.timeout,
                tmp=Path(tmp),
                log=_log,
            )
        if args.recipe_overhead:
            run_recipe_overhead(
                results,
                models=args.recipe_models,
                device=args.device,
                quick=args.quick,
                repeats=repeats,
                warmup=warmup,
                rounds=1 if args.quick else args.recipe_rounds,
                steps=args.steps,
                budget_s=args.recipe_budget or None,
                seed=args.seed,
                timeout=args.timeout,
                tmp=Path(tmp),
                log=_log,
            )
        if args.augment_pipeline:
            run_augment_pipeline(
                results,
                quick=args.quick,
                repeats=repeats,
                rounds=1 if args.quick else args.augment_rounds,
                device=args.device,
                seed=args.seed,
                timeout=args.timeout,
                python=timm_python(args.timm_python),
                tmp=Path(tmp),
                log=_log,
            )
        if args.nnx_design:
            run_nnx_design(
                results,
                models=args.nnx_design_models,
                device=args.device,
                bf16=args.bf16,
                quick=args.quick,
                warmup=warmup,
                rounds=args.nnx_design_rounds,
                seed=args.seed,
                timeout=args.timeout,
                tmp=Path(tmp),
                log=_log,
            )
        if args.eval_cost:
            _log("[eval-cost] seres eval, one process per case ...")
            results["eval_cost"] = eval_cost_section(
                Path(tmp) / "eval-cost", before=args.eval_cost_before, quick=args.quick
            )
        if args.predict:
            run_predict_bench(
                results,
                quick=args.quick,
                rounds=1 if args.quick else args.predict_rounds,
                timeout=args.timeout,
                python=timm_python(args.timm_python),
                inference=args.timm_inference,
                tmp=Path(tmp),
                log=_log,
            )
    machine["loadavg_end"] = loadavg()
    return results


def _measure_compile_cache(
    entry: dict[str, Any], name: str, spec: dict[str, Any], args: argparse.Namespace, tmp: Path
) -> None:
    """JAX's first calls with a cold, then a warm persistent compilation cache: two children
    sharing one cache directory."""
    cache_dir = tmp / f"{name}-jax-compile-cache"
    spec = {**spec, "kind": "compile_cache", "impl": "jax", "cache_dir": str(cache_dir)}
    env = worker_env("compile_cache", "jax", args.device, tmp / f"{name}-jax-compile-cache-env")
    for run in ("cold", "warm"):
        _log(f"[{name}] jax, {run} compilation cache ...")
        fill_compile_cache(entry, run, run_worker(spec, env, args.timeout))


def apply_only(args: argparse.Namespace) -> set[str]:
    """The sections this run measures; ``--only`` turns the others' skip flags on."""
    if args.only is None:
        measured = set(SECTIONS)
        skipped = {
            "models": args.skip_models,
            "convert": args.skip_convert,
            "pipeline": args.skip_pipeline,
            "eval": args.skip_eval,
            "recipe": not args.recipe_overhead,
            "augment": not args.augment_pipeline,
            "nnx-design": not args.nnx_design,
            "eval-cost": not args.eval_cost,
            "predict": not args.predict,
        }
        return {section for section in measured if not skipped[section]}
    only = set(args.only)
    args.skip_models = "models" not in only
    args.skip_convert = "convert" not in only
    args.skip_pipeline = "pipeline" not in only
    args.skip_eval = "eval" not in only
    args.recipe_overhead = "recipe" in only
    args.augment_pipeline = "augment" in only
    args.nnx_design = "nnx-design" in only
    args.eval_cost = "eval-cost" in only
    args.predict = "predict" in only
    return only


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker, WORKER_KINDS)
    measured = apply_only(args)
    results = run_benchmarks(args)
    if args.only is not None and args.json.exists():
        # Keep what this run did not measure: the existing file's other sections.
        results = merge_results(json.loads(args.json.read_text()), results, measured)
        _log(f"merged {', '.join(sorted(measured))} into {args.json}'s results")
    markdown = (
        render_markdown(results)
        + data_markdown(results)
        + recipe_markdown(results)
        + augment_markdown(results)
        + nnx_design_markdown(results)
        + eval_cost_markdown(results)
        + predict_markdown(results)
    )
    for path, text in (
        (args.json, json.dumps(results, indent=2) + "\n"),
        (args.markdown, markdown),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(markdown, end="")
    _log(f"wrote {args.json} and {args.markdown}")
    return 0
