"""Measures every timm zoo model in both frameworks: the table issue 13's closing note quotes.

Per model: parameters and ``state_dict`` entries at full size; the strict round trip
PyTorch -> Flax -> PyTorch at full size; JAX float32 against PyTorch at the test suite's
reduced size and input (``test_registry.test_reduced_parity``), worst output / input-gradient /
parameter-gradient / running-statistics errors in eval and train mode and whether they hold
``FP32_TOL``; and, where timm is importable, timm's own full-size model with randomised
BatchNorm: loaded strictly into ``seres_torch`` (largest logit difference, eval and train) and
into Flax (eval logits against timm float32, beside PyTorch float32's own error against float64
as the yardstick).

Run from the repository root (timm needs a torchvision matching its torch; docs/zoo.md's timm
section shows the scratch environment)::

    PYTHONPATH=. python -m parity_tests.zoo_report --out zoo_report [--names a,b] [--no-timm]

It writes ``zoo_report.json`` and ``zoo_report.md`` into ``--out`` (refusing to replace them
unless ``--force``) and prints the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import torch

from seres_jax.convert import flax_to_torch, torch_to_flax
from seres_jax.formats import atomic_path
from seres_jax.parity import (
    FP32_TOL,
    compare_modules,
    randomize_batchnorm,
    relative_error,
)
from seres_jax.registry import MODELS, build_flax, build_torch, variables_template

from .helpers import nchw_input, reduced_case, settle_batchnorm
from .zoo_table import markdown

ZOO_CLASSES = ("seres_jax.resnet:SEResNet", "seres_jax.senet:SENet")
NAMES = [name for name, spec in MODELS.items() if spec.flax_path in ZOO_CLASSES]
KINDS = ("output", "input_grad", "param_grad", "running_stats")
FULL_INPUT = (2, 3, 64, 64)  # every zoo model's smallest comfortable side (aa: multiples of 32)


def round_trip(name: str) -> dict[str, Any]:
    """Full size: counts, and whether PyTorch -> Flax (strict template) -> PyTorch is exact."""
    model = randomize_batchnorm(build_torch(name), seed=1)
    state = model.state_dict()
    back = flax_to_torch(torch_to_flax(state, variables_template(name)), model)
    exact = list(back) == list(state) and all(
        back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state.items()
    )
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "entries": len(state),
        "round_trip": "bit-exact" if exact else "DIFFERS",
    }


def reduced_parity(name: str) -> dict[str, Any]:
    """JAX float32 against PyTorch at the reduced size of ``test_registry``."""
    model, flax_model, x = reduced_case(name)
    out: dict[str, Any] = {"reduced_input": list(x.shape)}
    for mode in ("eval", "train"):
        result = compare_modules(model, flax_model, x, train=mode == "train")
        out[mode] = {k: v for k, v in result.worst().items() if k in KINDS}
        out[f"{mode}_holds_fp32_gates"] = not result.failures(FP32_TOL)
    return out


def against_timm(name: str, timm: Any) -> dict[str, Any]:
    """timm's full-size model in seres_torch (exactly?) and in Flax (eval logits)."""
    x = nchw_input(FULL_INPUT, seed=1)
    reference = settle_batchnorm(
        randomize_batchnorm(timm.create_model(name, pretrained=False), seed=4), x
    )
    ours = build_torch(name)
    ours.load_state_dict(reference.state_dict(), strict=True)
    diffs = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            reference.train(mode == "train")
            ours.train(mode == "train")
            outputs = []
            for m in (ours, reference):
                torch.manual_seed(0)  # the legacy models' dropout: the same mask in both
                outputs.append(m(torch.from_numpy(x)))
            diffs[mode] = float((outputs[0] - outputs[1]).abs().max())
        reference.eval()
        want32 = reference(torch.from_numpy(x)).numpy()
        want64 = reference.double()(torch.from_numpy(x).double()).numpy()
        reference.float()
    variables = torch_to_flax(reference.state_dict(), variables_template(name))  # strict
    flax_model = build_flax(name)
    got = jax.jit(lambda v, xj: flax_model.apply(v, xj))(variables, x.transpose(0, 2, 3, 1))
    return {
        "torch_vs_timm_eval": diffs["eval"],
        "torch_vs_timm_train": diffs["train"],
        "flax_vs_timm_eval": relative_error(np.asarray(got), want32),
        "flax_vs_float64_eval": relative_error(np.asarray(got), want64),
        "torch_fp32_vs_float64_eval": relative_error(want32, want64),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--names", default=",".join(NAMES))
    parser.add_argument("--no-timm", action="store_true")
    parser.add_argument("--force", action="store_true", help="replace an earlier report")
    args = parser.parse_args(argv)
    names = args.names.split(",")
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        parser.error(f"not zoo models: {', '.join(unknown)}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: not a directory")
    for suffix in ("json", "md"):
        if (args.out / f"zoo_report.{suffix}").exists() and not args.force:
            parser.error(f"{args.out / f'zoo_report.{suffix}'} exists; pass --force to replace")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    jax.config.update("jax_default_matmul_precision", "highest")
    timm = None
    if not args.no_timm and importlib.util.find_spec("timm") is not None:
        import timm
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        start = time.perf_counter()
        row = {**round_trip(name), **reduced_parity(name)}
        if timm is not None:
            row["timm"] = against_timm(name, timm)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    versions = {"jax": jax.__version__, "torch": torch.__version__}
    if timm is not None:
        versions["timm"] = timm.__version__
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    for suffix, text in (
        ("json", json.dumps({"versions": versions, "models": rows}, indent=1)),
        ("md", table),
    ):
        with atomic_path(args.out / f"zoo_report.{suffix}", force=args.force) as tmp:
            tmp.write_text(text)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
