"""What ``seres eval`` costs a user: wall time, peak memory, steady images/s and compilation of
the command itself (issue 23), one ``seres eval`` process per case, timed by
``/usr/bin/time -v`` (its "Elapsed (wall clock) time" and "Maximum resident set size"; where
it is missing, the same ``wait4`` figures read directly).

Cases (``CASES``): random ``seresnet50:num_classes=3`` weights (``.safetensors``) evaluated at
224x224 on an image folder's ``val`` split of 15 photographs and of 1,000 (JPEG crops of
scikit-learn's two sample photos, ``photo_folder.make_photo_folder``, 3 classes), at the
default batch and at ``--batch-size 15``, with and without ``--torch``. Each case runs with a
fresh, empty compilation cache (a user's first run); ``warm=True`` reruns each with its
cache filled. ``python_path`` runs another checkout's seres (e.g. ``git archive`` of an
earlier commit), for before/after figures from one machine.

Measured on the 2-core development machine (shared with other work, so the times move with
its load: each before/after pair below ran back to back, interleaved; seresnet50 at 224,
random weights, a cold compilation cache, ``/usr/bin/time -v``). Before: commit 2f0ff56,
every batch padded to the full 256 and images/s counting the compilation; after: the last
batch at its own size, images/s the steady state, the compilation (``compile_s``) apart, and
the CPU's default batch 16 at 224x224 (15 here: never more than the split).

* 15 images, default batch: before 20.1 s, 4824 MiB, 0.8 images/s; after 4.5-4.7 s,
  889-892 MiB, 15.0-15.3 images/s, compile 1.4 s (batch 15). Three pairs.
* 15 images, ``--batch-size 15``: before 4.6-4.8 s, 883-888 MiB, 5.9-6.2 images/s; after,
  the same command as the default.
* 15 images, default batch, ``--torch``: before 96.4 s, 6409 MiB; after 16.6 s, 1349 MiB
  (one pair at a load of ~4 on the 2 cores).
* 15 images, ``--batch-size 15 --torch``: before 7.3-13.0 s, 1432-1434 MiB; after (default
  batch) 7.5-13.0 s, 1345-1366 MiB. Two pairs.
* 1,000 images, default batch: before 37.2 s, 5287 MiB, 28.6 images/s (compilation
  included); after 36.3 s, 1496 MiB, 31.1 images/s, compile 2.0 s (batch 16; two shapes,
  16 and 8). ``--batch-size 256`` after: 46.8 s, 5335 MiB, 23.5 images/s.

On 15 images the default now costs 0.98x the time and 1.01x the memory of ``--batch-size
15`` before (the issue's goal: at most 1.2x); on 1,000, 0.98x the time in 0.28x the memory,
and batch 16 is no slower on the CPU than 256.

``python -m seres_bench.eval_cost --out DIR [--before CHECKOUT]`` (from ``benchmarks/``) runs
them and writes ``DIR/eval_cost.json`` and ``.md``; ``eval_cost(...)`` is the function.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .machine import loadavg
from .photo_folder import make_photo_folder
from .report import measured_line, section_header

ARCH = "seresnet50:num_classes=3"
IMAGE_SIZE = 224
TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Case:
    """One ``seres eval`` run: the folder (by its val image count), ``--batch-size`` (``None``:
    the default) and whether ``--torch`` runs beside."""

    images: int
    batch: int | None
    torch: bool

    @property
    def name(self) -> str:
        batch = "default" if self.batch is None else f"b{self.batch}"
        return f"{self.images}img_{batch}{'_torch' if self.torch else ''}"


CASES = (
    Case(15, None, False),
    Case(15, 15, False),
    Case(15, None, True),
    Case(15, 15, True),
    Case(1000, None, False),
)


def write_weights(path: Path, arch: str = ARCH, image_size: int = IMAGE_SIZE) -> Path:
    """Seeded random weights of ``arch`` as a PyTorch-keyed ``.safetensors`` file."""
    from seres_jax.convert import flax_to_state_dict
    from seres_jax.formats import save_state_dict
    from seres_jax.registry import build_flax
    from seres_jax.train import init_variables

    variables = init_variables(build_flax(arch), (image_size, image_size, 3), 0)
    save_state_dict(flax_to_state_dict(variables), path, force=True)
    return path


def folder(root: Path, images: int, classes: int = 3) -> Path:
    """``root`` holding ``images`` validation photographs (and one training image a class,
    which an image folder needs) in ``classes`` classes; written once."""
    if not (root / "val").is_dir():
        make_photo_folder(root, train=classes, val=images, classes=classes)
    return root


def _clock_s(text: str) -> float:
    """``/usr/bin/time``'s ``[h:]mm:ss.ss`` in seconds."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def timed(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv``: its exit status, wall seconds and peak RSS (MiB), by ``/usr/bin/time -v``
    where present, else from ``wait4``; the last 2,000 characters of its output. ``wait4``'s
    peak is an upper bound: Linux carries the parent's peak at the fork into the child's, so
    a large parent (a test worker) shows through."""
    if os.path.exists(TIME):
        proc = subprocess.run([TIME, "-v", *argv], env=env, capture_output=True, text=True)
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if wall is None or rss is None:
            raise RuntimeError(f"no /usr/bin/time -v report in: {proc.stderr[-2000:]}")
        wall_s, rss_kib, status = _clock_s(wall.group(1)), int(rss.group(1)), proc.returncode
        output = proc.stdout + proc.stderr
    else:
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as log:
            child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            _, code, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(code)
            wall_s, rss_kib, status = time.perf_counter() - start, usage.ru_maxrss, child.returncode
            log.seek(0)
            output = log.read()
    return {"status": status, "wall_s": wall_s, "peak_rss_mib": rss_kib / 1024,
            "output": output[-2000:]}  # fmt: skip


def run_case(
    case: Case,
    weights: Path,
    data_dir: Path,
    workdir: Path,
    *,
    python: str = sys.executable,
    python_path: Path | None = None,
    warm: bool = False,
) -> dict[str, Any]:
    """``seres eval`` of ``case`` (``python_path``: the checkout to import seres from), its
    cost and its ``--json`` report; with ``warm``, run again with the compilation cache the
    first run filled (``warm_wall_s`` ...)."""
    cache = workdir / f"cache_{case.name}"
    shutil.rmtree(cache, ignore_errors=True)
    report = workdir / f"{case.name}.json"
    argv = [python, "-c", "import sys; from seres_cli.main import main; sys.exit(main())",
            "eval", str(weights), "--arch", ARCH, "--dataset", "imagefolder",
            "--data-dir", str(data_dir), "--split", "val", "--no-progress",
            "--compile-cache", str(cache), "--json", str(report), "--force"]  # fmt: skip
    if case.batch is not None:
        argv += ["--batch-size", str(case.batch)]
    if case.torch:
        argv.append("--torch")
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(python_path),
                                                          env.get("PYTHONPATH")]))  # fmt: skip
    result: dict[str, Any] = {**asdict(case), "name": case.name, **timed(argv, env)}
    if result["status"] == 0:
        result["report"] = json.loads(report.read_text())
        if warm:
            again = timed(argv, env)
            result.update(warm_wall_s=again["wall_s"], warm_peak_rss_mib=again["peak_rss_mib"],
                          warm_report=json.loads(report.read_text()))  # fmt: skip
    return result


def eval_cost(
    workdir: Path,
    *,
    cases: tuple[Case, ...] = CASES,
    python: str = sys.executable,
    python_path: Path | None = None,
    warm: bool = False,
) -> list[dict[str, Any]]:
    """Every case of ``cases``, run as ``run_case`` runs it; the folders and weights are
    written into ``workdir`` once (by this process's seres)."""
    workdir.mkdir(parents=True, exist_ok=True)
    weights = workdir / "seresnet50_3.safetensors"
    if not weights.exists():
        write_weights(weights)
    results = []
    for case in cases:
        data_dir = folder(workdir / f"photos_{case.images}", case.images)
        results.append(run_case(case, weights, data_dir, workdir, python=python,
                                python_path=python_path, warm=warm))  # fmt: skip
        print(_row(results[-1]), file=sys.stderr, flush=True)
    return results


def _row(result: dict[str, Any]) -> str:
    if result["status"] != 0:
        return f"{result['name']}: exit {result['status']}: {result['output'][-300:]}"
    jax_result = result["report"]["jax"]
    compile_s = jax_result.get("compile_s")
    compiled = "" if compile_s is None else f", compile {compile_s:.1f} s"
    return (
        f"{result['name']}: {result['wall_s']:.1f} s, {result['peak_rss_mib']:.0f} MiB, "
        f"{jax_result['images_per_s']:.1f} images/s (batch "
        f"{result['report'].get('batch_size', 'default')}{compiled})"
    )


def markdown(before: list[dict[str, Any]] | None, after: list[dict[str, Any]]) -> str:
    """A table of the cases: before (where given) and after, wall, peak RSS and images/s."""
    lines = ["| images | batch | --torch | before | after |", "| --- | --- | --- | --- | --- |"]
    old = {r["name"]: r for r in before or []}
    for result in after:
        previous = old.get(result["name"])
        batch = "default" if result["batch"] is None else str(result["batch"])
        lines.append(
            f"| {result['images']} | {batch} | {'yes' if result['torch'] else 'no'} | "
            f"{_cell(previous)} | {_cell(result)} |"
        )
    return "\n".join(lines) + "\n"


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "–"
    if result["status"] != 0:
        return f"exit {result['status']}"
    jax_result = result["report"]["jax"]
    text = (f"{result['wall_s']:.1f} s, {result['peak_rss_mib'] / 1024:.2f} GiB, "
            f"{jax_result['images_per_s']:.1f} img/s")  # fmt: skip
    if "compile_s" in jax_result:
        text += (
            f" (compile {jax_result['compile_s']:.1f} s, batch {result['report']['batch_size']})"
        )
    if "warm_wall_s" in result:
        text += f"; warm cache {result['warm_wall_s']:.1f} s"
    return text


def bench_section(
    workdir: Path, *, before: Path | None = None, warm: bool = False, quick: bool = False
) -> dict[str, Any]:
    """``bench.py``'s ``eval_cost`` entry (``--only eval-cost``): every case (``quick``: the
    first alone) with this seres (``after``) and, given a checkout of an earlier one, with it
    (``before``), in ``workdir``; with the date, command, machine and versions of the run."""
    cases = CASES[:1] if quick else CASES
    section = section_header()
    section["settings"] = {
        "device": os.environ.get("JAX_PLATFORMS", "cpu"),  # what run_case gives seres eval
        "quick": quick,
        "warm": warm,
        "arch": ARCH,
        "image_size": IMAGE_SIZE,
        "cases": [c.name for c in cases],
        "before": None if before is None else str(before),
    }
    old = None if before is None else eval_cost(workdir, cases=cases, python_path=before)
    section.update(before=old, after=eval_cost(workdir, cases=cases, warm=warm))
    section["machine"]["loadavg_end"] = loadavg()
    return section


def section_markdown(results: dict[str, Any]) -> str:
    """The markdown of ``results["eval_cost"]`` (``bench_section``'s), or nothing."""
    entry = results.get("eval_cost")
    if not entry:
        return ""
    # A section from before the entry carried its own header has no "Measured" line.
    measured = measured_line(entry) + "\n\n" if "settings" in entry else ""
    return (
        "\n## `seres eval`'s cost (seresnet50, 224, one process per case)\n\n"
        + measured
        + markdown(entry["before"], entry["after"])
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m seres_bench.eval_cost --out DIR [--before CHECKOUT] [--warm]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work and results directory")
    parser.add_argument("--before", type=Path,
                        help="an earlier seres checkout to run the same cases with")  # fmt: skip
    parser.add_argument("--warm", action="store_true", help="also rerun with a filled cache")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    args = parser.parse_args(argv)
    cases: tuple[Case, ...] = CASES
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = tuple(c for c in CASES if c.name in wanted)
    before = None
    if args.before is not None:
        before = eval_cost(args.out, cases=cases, python_path=args.before)
    after = eval_cost(args.out, cases=cases, warm=args.warm)
    (args.out / "eval_cost.json").write_text(json.dumps({"before": before, "after": after},
                                                        indent=2))  # fmt: skip
    table = markdown(before, after)
    (args.out / "eval_cost.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
