"""The command line (``python benchmarks/bench.py --help``) and the run: every requested
measurement in its own child process, then ``results.json`` and ``results.md``."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from collections.abc import Callable
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
    DEVICES,
    IMPLS,
    LR,
    MOMENTUM,
    NESTEROV,
    QUICK,
    RECIPE_MODELS,
    WEIGHT_DECAY,
)
from .data_bench import data_markdown, run_data_benchmarks
from .machine import loadavg, machine_info, versions
from .recipe_overhead import recipe_markdown, run_recipe_overhead
from .report import (
    SECTIONS,
    add_ratios,
    empty_entry,
    fill_compile_cache,
    fill_entry,
    merge_results,
    render_markdown,
)
from .worker import WORKERS, run_worker, worker_env, worker_main

HERE = Path(__file__).resolve().parents[1]
# The child processes' kinds: worker.py's and the augmented-pipeline section's seres side.
WORKER_KINDS = {**WORKERS, "augment": augment_worker}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Throughput, first-call time and peak memory of the seres SE-ResNets in "
        "JAX, PyTorch eager and torch.compile, the weight converter's speed, and on an image "
        "folder the input pipeline against a torch DataLoader and seres eval against seres_torch "
        "(opt-in: timm's recipe pieces in the JAX step; the pipeline with RandAugment and random "
        "erasing against timm's own DataLoader).",
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
        default=list(IMPLS),
        help=f"comma-separated implementations (default: {','.join(IMPLS)})",
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
    parser.add_argument(
        "--recipe-overhead",
        action="store_true",
        help="also measure the JAX training step with timm's recipe pieces (EMA, drop path, "
        "gradient accumulation) against the baseline; ~20 minutes on 2 CPU cores",
    )
    parser.add_argument(
        "--recipe-models",
        type=_csv(list(RECIPE_MODELS)),
        default=list(RECIPE_MODELS),
        help=f"the recipe-overhead section's models (default: {','.join(RECIPE_MODELS)})",
    )
    parser.add_argument(
        "--recipe-rounds",
        type=_positive,
        default=3,
        help="recipe overhead: child processes per variant, the order reversed each round (3)",
    )
    parser.add_argument(
        "--recipe-budget",
        type=float,
        default=60.0,
        help="recipe overhead: seconds of timed repetitions per child; they stop once past it "
        "(at least one), and a variant so cut runs one round only (60; 0: no limit)",
    )
    parser.add_argument(
        "--augment-pipeline",
        action="store_true",
        help="also measure the input pipeline with timm's RandAugment and random erasing against "
        "a DataLoader running timm's create_transform (needs --timm-python); ~5 minutes on 2 CPU "
        "cores",
    )
    parser.add_argument(
        "--augment-rounds",
        type=_positive,
        default=AUGMENT_ROUNDS,
        help="augmented pipeline: child processes per side and worker count, the sides' order "
        f"reversed each round ({AUGMENT_ROUNDS})",
    )
    parser.add_argument(
        "--timm-python",
        default=None,
        help="augmented pipeline: a Python interpreter with timm, torch and torchvision, which "
        f"runs timm's side (default: ${TIMM_PYTHON_ENV}; neither: timm's side is skipped)",
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
    machine = machine_info()
    machine["accelerators"] = {}
    # Other work on the machine distorts everything (torch's OpenMP threads most of all):
    # the load average before and after lets a reader judge.
    machine["loadavg_start"] = loadavg()
    results: dict[str, Any] = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "machine": machine,
        "versions": versions(),
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
            "recipe": {
                "optimizer": "sgd",
                "lr": LR,
                "momentum": MOMENTUM,
                "weight_decay": WEIGHT_DECAY,
                "nesterov": NESTEROV,
            },
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
                if args.device == "tpu" and impl != "jax":
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
                    framework = "jax" if impl == "jax" else "torch"
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
        }
        return {section for section in measured if not skipped[section]}
    only = set(args.only)
    args.skip_models = "models" not in only
    args.skip_convert = "convert" not in only
    args.skip_pipeline = "pipeline" not in only
    args.skip_eval = "eval" not in only
    args.recipe_overhead = "recipe" in only
    args.augment_pipeline = "augment" in only
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
