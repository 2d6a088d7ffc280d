"""``seres predict`` against timm's ``inference.py`` (or, without timm, ``seres_torch`` with the
same preprocessing) on the same folder of photographs and the same weights, end to end: each
side is the command a user runs, in a fresh process, timed from its start to its exit.

* **The weights**: ``PREDICT["arch"]`` (seresnet50) with seeded random weights at He scale (no
  initialisation compiled), written once by a child as timm's hub directory
  (``seres_jax.export.export_timm``). seres reads it as ``local-dir:DIR`` and timm as
  ``--model local-dir:DIR``: the same file, the same ``pretrained_cfg`` (224 pixels, crop 0.875,
  bicubic).
* **The folders** (``photo_folder``): ImageNet-like JPEGs (~500x375), one folder per size in
  ``PREDICT["sizes"]``, both sides predicting the top 5 of every image.
* **seres**: ``python -m seres_cli.main predict local-dir:DIR FOLDER --batch-size B --workers W
  --results-file F.csv``, with a compilation cache warmed by one untimed run (a user's second
  run); its own report (steady images/s, compile seconds) is kept beside the wall time.
* **timm**: ``<timm python> inference.py --model local-dir:DIR --data-dir FOLDER --batch-size B
  --workers W --device cpu --topk 5 --include-index --label-type none`` (timm's script is not
  in timm's wheel: a checkout's ``inference.py``, ``--timm-inference`` or
  ``$SERES_TIMM_INFERENCE``; it needs pandas). Without both, **seres_torch** (a child of this
  environment): ``find_images``, a ``DataLoader(num_workers=W)`` over ``decode_rgb`` +
  ``eval_crop`` + ``normalize``, the model under ``torch.inference_mode()``, softmax top-5 to
  a CSV: what timm's script does, with seres' preprocessing.
* **Figures**: per side and folder size the wall time, images/s end to end (images / wall),
  the peak RSS of the process tree's largest process (``wait4``); per side the *marginal*
  images/s between the two sizes, ``(n2 - n1) / (wall2 - wall1)``: the steady rate with the
  start-up (imports, model load, compilation) taken out, measured the same way for both. The
  sides alternate order across ``rounds``; each figure is the median over the rounds. The top-1
  classes of the two sides' results are compared file by file (``top1_agreement``).

Entry points: ``run_predict_bench(results, ...)`` (fills ``results["predict"]``) and
``predict_markdown(results)``; by hand, from ``benchmarks/``::

    python -m seres_bench.predict_bench --timm-python /work/venv-timm/bin/python \\
        --timm-inference /path/to/pytorch-image-models/inference.py --out predict.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .machine import loadavg
from .photo_folder import make_photo_folder
from .report import section_header

RESULT_PREFIX = "BENCH_RESULT "
BENCH_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = BENCH_DIR.parent
TIMM_PYTHON_ENV, TIMM_INFERENCE_ENV = "SERES_TIMM_PYTHON", "SERES_TIMM_INFERENCE"
PREDICT: dict[str, Any] = {
    "arch": "seresnet50", "sizes": (64, 256), "batch": 32, "workers": 2, "topk": 5, "seed": 0,
}  # fmt: skip
PREDICT_QUICK: dict[str, Any] = {**PREDICT, "sizes": (16, 48)}
# seres predict's summary line: "... on N images: R images/s, compile C s".
_SERES_LINE = re.compile(
    r"on (\d+) images?(?:, \d+ skipped)?: ([\d.]+) images/s, compile ([\d.]+) s"
)


# --------------------------------------------------------------------------- children


def _export_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The random weights in timm's layout at ``spec["out"]``."""
    from seres_jax.export import export_timm
    from seres_jax.registry import data_config, random_variables

    arch = spec["arch"]
    export_timm(random_variables(arch, spec["seed"]), arch, spec["out"],
                data_config=data_config(arch).for_eval())  # fmt: skip
    return {"out": spec["out"]}


def _torch_child(spec: dict[str, Any]) -> dict[str, Any]:
    """timm's ``inference.py`` with ``seres_torch`` and seres' preprocessing: the top-k of every
    image of ``spec["folder"]`` to ``spec["results"]`` (csv)."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from seres_jax.data import DataConfig, decode_rgb, eval_crop, normalize
    from seres_jax.predict import find_images
    from seres_jax.registry import build_torch

    config_json = json.loads((Path(spec["export"]) / "config.json").read_text())
    cfg = config_json["pretrained_cfg"]
    data = DataConfig(cfg["input_size"][-1], cfg["crop_pct"], cfg["interpolation"],
                      tuple(cfg["mean"]), tuple(cfg["std"]))  # fmt: skip
    model = build_torch(spec["arch"])
    model.load_state_dict(load_file(str(Path(spec["export"]) / "model.safetensors")))
    model.eval()
    paths = find_images([spec["folder"]]).paths

    class Files(torch.utils.data.Dataset[Any]):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> Any:
            with open(paths[i], "rb") as f:
                img = decode_rgb(f.read(), paths[i])
            pixels = eval_crop(img, data.input_size, data.crop_pct, data.interpolation)
            return torch.from_numpy(normalize(pixels, data.mean, data.std).transpose(2, 0, 1))

    loader = torch.utils.data.DataLoader(Files(), batch_size=spec["batch"],
                                         num_workers=spec["workers"])  # fmt: skip
    rows = []
    with torch.inference_mode():
        for images in loader:
            probs, indices = model(images).softmax(-1).topk(spec["topk"])
            rows += list(zip(indices.numpy().tolist(), probs.numpy().tolist(), strict=True))
    with open(spec["results"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "index", "prob"])
        for path, (index, prob) in zip(paths, rows, strict=True):
            writer.writerow([os.path.basename(path), json.dumps(index), json.dumps(prob)])
    return {"count": len(rows), "torch": torch.__version__, "numpy": np.__version__}


_CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "export": _export_child, "torch": _torch_child,
}  # fmt: skip


def child_main(kind: str, spec_json: str) -> None:
    """A child's entry: run ``kind`` on the JSON spec and print its answer as one line."""
    print(RESULT_PREFIX + json.dumps(_CHILDREN[kind](json.loads(spec_json))), flush=True)


# --------------------------------------------------------------------------- the parent


def _timed(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``: its wall time, exit status, output and peak RSS (MiB; ``wait4``'s, the
    largest of the process and the children it reaped: grain's and the DataLoader's workers)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=REPO_DIR)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"fatal": f"timed out after {timeout:.0f} s"}
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {"wall_s": wall, "maxrss_mib": usage.ru_maxrss / 1024, "stdout": stdout,
              "stderr": stderr}  # fmt: skip
    if proc.returncode:
        result["fatal"] = f"exit status {proc.returncode}: {stderr.strip()[-1500:]}"
    return result


def _child(kind: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    code = (f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); "
            "from seres_bench.predict_bench import child_main; "
            "child_main(sys.argv[1], sys.argv[2])")  # fmt: skip
    run = _timed([sys.executable, "-c", code, kind, json.dumps(spec)], timeout)
    if "fatal" in run:
        return run
    for line in reversed(run["stdout"].splitlines()):
        if line.startswith(RESULT_PREFIX):
            answer: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return {**answer, "wall_s": run["wall_s"], "maxrss_mib": run["maxrss_mib"]}
    return {"fatal": f"no answer from the {kind} child: {run['stderr'][-1500:]}"}


def _seres(settings: dict[str, Any], export: Path, folder: Path, out: Path, cache: Path,
           timeout: float) -> dict[str, Any]:  # fmt: skip
    cmd = [sys.executable, "-m", "seres_cli.main", "predict", f"local-dir:{export}", str(folder),
           "--batch-size", str(settings["batch"]), "--workers", str(settings["workers"]),
           "--topk", str(settings["topk"]), "--results-file", str(out), "--force",
           "--no-progress", "--compile-cache", str(cache)]  # fmt: skip
    run = _timed(cmd, timeout)
    if "fatal" in run:
        return run
    own = _SERES_LINE.search(run["stdout"])
    return {"wall_s": run["wall_s"], "maxrss_mib": run["maxrss_mib"],
            "own_img_s": float(own[2]) if own else None,
            "compile_s": float(own[3]) if own else None}  # fmt: skip


def _timm(settings: dict[str, Any], python: str, script: str, export: Path, folder: Path,
          out: Path, timeout: float) -> dict[str, Any]:  # fmt: skip
    cmd = [python, script, "--model", f"local-dir:{export}", "--data-dir", str(folder),
           "--batch-size", str(settings["batch"]), "--workers", str(settings["workers"]),
           "--device", "cpu", "--topk", str(settings["topk"]), "--include-index",
           "--label-type", "none", "--results-dir", str(out.parent), "--results-file",
           out.stem, "--no-console-results"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = _timed(cmd, timeout, env)
    return run if "fatal" in run else {"wall_s": run["wall_s"], "maxrss_mib": run["maxrss_mib"]}


def _torch(settings: dict[str, Any], export: Path, folder: Path, out: Path,
           timeout: float) -> dict[str, Any]:  # fmt: skip
    spec = {**settings, "export": str(export), "folder": str(folder), "results": str(out)}
    answer = _child("torch", spec, timeout)
    return answer if "fatal" in answer else {k: answer[k] for k in ("wall_s", "maxrss_mib")}


def _top1(path: Path) -> dict[str, int]:
    """File base name -> top-1 class of a results CSV: seres' (``index`` a JSON list), timm's
    (a numpy array's text, ``[3 1 4]``) or the seres_torch child's."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    index = "index" if rows and "index" in rows[0] else "index_0"
    return {os.path.basename(r["filename"]): int(re.findall(r"-?\d+", r[index])[0]) for r in rows}


def timm_side(python: str | None, script: str | None) -> tuple[str | None, str | None, str]:
    """``(python, script, why)``: timm's interpreter and ``inference.py`` where both are given and
    timm and pandas import there; else ``(None, None, why not)`` (seres_torch stands in)."""
    python = python or os.environ.get(TIMM_PYTHON_ENV)
    script = script or os.environ.get(TIMM_INFERENCE_ENV)
    if not python or not script:
        why = (f"no timm interpreter and inference.py (--timm-python/${TIMM_PYTHON_ENV}, "
               f"--timm-inference/${TIMM_INFERENCE_ENV})")  # fmt: skip
        return None, None, why
    if not Path(script).is_file():
        return None, None, f"{script}: no such file"
    probe = subprocess.run([python, "-c", "import timm, pandas; print(timm.__version__)"],
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode:
        return None, None, f"{python} cannot import timm and pandas: {probe.stderr.strip()[-300:]}"
    return python, script, f"timm {probe.stdout.strip()}"


def run_predict_bench(
    results: dict[str, Any],
    *,
    quick: bool = False,
    rounds: int = 2,
    timeout: float = 1800,
    python: str | None = None,
    inference: str | None = None,
    tmp: Path,
    log: Callable[[str], None] = print,
) -> None:
    """The export and the folders, then per round both sides on every folder size (the order
    alternating) into ``results["predict"]``."""
    settings = {**(PREDICT_QUICK if quick else PREDICT)}
    python, script, reference_note = timm_side(python, inference)
    reference = "timm" if python else "seres_torch"
    section: dict[str, Any] = {
        **section_header(),
        "settings": {
            **settings,
            "sizes": list(settings["sizes"]),
            "rounds": rounds,
            "quick": quick,
        },
        "reference": reference,
        "reference_note": reference_note,
        "runs": [],
        "errors": [],
    }
    results["predict"] = section
    export = tmp / "predict-export"
    log(f"[predict] exporting random {settings['arch']} weights as timm's layout ...")
    made = _child("export", {**settings, "out": str(export)}, timeout)
    if "fatal" in made:
        section["errors"].append(f"export: {made['fatal']}")
        return
    folders = {n: make_photo_folder(tmp / f"predict-photos-{n}", 4, n, seed=settings["seed"])
               / "val" for n in settings["sizes"]}  # fmt: skip
    cache = tmp / "predict-jax-cache"
    log("[predict] warming seres' compilation cache (untimed) ...")
    warm = _seres(settings, export, folders[settings["sizes"][0]], tmp / "warm.csv", cache,
                  timeout)  # fmt: skip
    section["cold_first_run"] = warm
    sides = ("seres", reference)
    for round_index in range(rounds):
        order = sides if round_index % 2 == 0 else sides[::-1]
        for n, folder in folders.items():
            for side in order:
                log(f"[predict] {side}, {n} images, round {round_index + 1}/{rounds} "
                    f"(load {loadavg()}) ...")  # fmt: skip
                out = tmp / f"predict-{side}-{n}.csv"
                if side == "seres":
                    run = _seres(settings, export, folder, out, cache, timeout)
                elif python is not None and script is not None:
                    run = _timm(settings, python, script, export, folder, out, timeout)
                else:
                    run = _torch(settings, export, folder, out, timeout)
                if "fatal" in run:
                    section["errors"].append(f"{side}, {n} images: {run['fatal']}")
                    continue
                section["runs"].append({"side": side, "images": n, "round": round_index, **run})
    _finish(section, tmp, sides)
    section["machine"]["loadavg_end"] = loadavg()


def _finish(section: dict[str, Any], tmp: Path, sides: tuple[str, str]) -> None:
    """Medians per side and size, the marginal rates, their ratio and the top-1 agreement."""
    sizes = section["settings"]["sizes"]
    summary: dict[str, Any] = {}
    for side in sides:
        per_size: dict[str, Any] = {}
        for n in sizes:
            runs = [r for r in section["runs"] if r["side"] == side and r["images"] == n]
            if not runs:
                continue
            wall = statistics.median(r["wall_s"] for r in runs)
            per_size[str(n)] = {"wall_s": wall, "end_to_end_img_s": n / wall,
                                "maxrss_mib": max(r["maxrss_mib"] for r in runs)}  # fmt: skip
            if side == "seres":
                # None where seres' summary line was not found in any run (its wording changed).
                own = [r["own_img_s"] for r in runs if r.get("own_img_s") is not None]
                per_size[str(n)]["own_img_s"] = statistics.median(own) if own else None
        low, high = (per_size.get(str(n)) for n in (sizes[0], sizes[-1]))
        marginal = None
        if low and high and high["wall_s"] > low["wall_s"]:
            marginal = (sizes[-1] - sizes[0]) / (high["wall_s"] - low["wall_s"])
        summary[side] = {"sizes": per_size, "marginal_img_s": marginal}
    a, b = (summary[s]["marginal_img_s"] for s in sides)
    summary["marginal_ratio"] = a / b if a and b else None
    agreement = {}
    for n in sizes:
        files = [tmp / f"predict-{side}-{n}.csv" for side in sides]
        if all(f.is_file() for f in files):
            ours, theirs = _top1(files[0]), _top1(files[1])
            same = sum(ours[k] == theirs.get(k) for k in ours)
            agreement[str(n)] = {"count": len(ours), "same_top1": same}
    summary["top1_agreement"] = agreement
    section["summary"] = summary


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def predict_markdown(results: dict[str, Any]) -> str:
    """The section's Markdown: one row per side and folder size, then the marginal rates."""
    section = results.get("predict")
    if not section or "summary" not in section:
        return ""
    s, summary = section["settings"], section["summary"]
    reference = section["reference"]
    lines = [
        "",
        "## seres predict against "
        + ("timm's inference.py" if reference == "timm" else "seres_torch (timm not available)"),
        "",
        f"{s['arch']} (random weights, one timm export read by both), 224 px, batch {s['batch']}, "
        f"{s['workers']} workers, top-{s['topk']}; JPEGs ~500x375; each figure the median of "
        f"{s['rounds']} rounds, wall time of the whole command. Reference: "
        f"{section['reference_note']}.",
        "",
        "| side | images | wall s | images/s end to end | peak RSS MiB | seres' own images/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side in ("seres", reference):
        for n, row in summary[side]["sizes"].items():
            lines.append(f"| {side} | {n} | {_fmt(row['wall_s'])} | "
                         f"{_fmt(row['end_to_end_img_s'])} | {_fmt(row['maxrss_mib'], 0)} | "
                         f"{_fmt(row.get('own_img_s'))} |")  # fmt: skip
    lines += [
        "",
        f"Marginal images/s ({s['sizes'][0]} -> {s['sizes'][-1]} images, start-up taken out): "
        f"seres {_fmt(summary['seres']['marginal_img_s'])}, {reference} "
        f"{_fmt(summary[reference]['marginal_img_s'])}, ratio "
        f"{_fmt(summary['marginal_ratio'], 2)}x.",
    ]
    for n, agree in summary["top1_agreement"].items():
        lines.append(f"Top-1 classes identical on {agree['same_top1']} of {agree['count']} "
                     f"images ({n}-image folder).")  # fmt: skip
    if section.get("cold_first_run", {}).get("wall_s"):
        cold = section["cold_first_run"]
        lines.append(f"seres' first run with an empty compilation cache: {cold['wall_s']:.1f} s "
                     f"({_fmt(cold.get('compile_s'))} s compiling).")  # fmt: skip
    for error in section["errors"]:
        lines.append(f"- error: {error}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"folders of {PREDICT_QUICK['sizes']}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timm-python", help=f"default ${TIMM_PYTHON_ENV}")
    parser.add_argument("--timm-inference", help=f"timm's inference.py (${TIMM_INFERENCE_ENV})")
    parser.add_argument("--out", type=Path, help="write the results JSON here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="seres-predict-bench-") as tmp:
        run_predict_bench(results, quick=args.quick, rounds=args.rounds, python=args.timm_python,
                          inference=args.timm_inference, tmp=Path(tmp),
                          log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    print(predict_markdown(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
