"""The test suite's recorded figures: what ``.ci/run`` measured, kept in
``docs/data/ci_summary.json`` and rendered into the docs and the README.

``.ci/run`` calls ``record`` after its two test runs and the demo; a maintainer copies the file
it writes into ``docs/data/`` (the figures then say which commit they were measured on)::

    python -m docs.seres_docs.suite record --out summary.json --main MAIN.xml --main-seconds S \\
        --torch-free FREE.xml --torch-free-seconds S --worst WORST.json --demo DEMO.log

Standard library only: it runs in CI's fresh environment before anything else is installed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / "docs" / "data" / "ci_summary.json"
_DEMO = {
    "jax_accuracy": r"test accuracy: JAX ([\d.]+)%",
    "torch_accuracy": r"PyTorch ([\d.]+)%",
    "test_images": r"\((\d+) images;",
    "logit_difference": r"largest logit difference JAX vs PyTorch: ([\d.e+-]+)",
    "wall_s": r"wall time ([\d.]+) s",
}


def junit_counts(path: Path) -> dict[str, int]:
    """passed/skipped/failed of one pytest ``--junitxml`` file."""
    suite = ET.parse(path).getroot().find("testsuite")
    if suite is None:
        raise ValueError(f"{path}: no <testsuite>")
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return {"passed": tests - skipped - failed, "skipped": skipped, "failed": failed}


def demo_figures(text: str) -> dict[str, float]:
    """The figures of ``seres demo``'s last lines; every one must be there."""
    found = {key: re.search(pattern, text) for key, pattern in _DEMO.items()}
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise ValueError(f"seres demo's output lacks {', '.join(missing)}")
    return {key: float(match.group(1)) for key, match in found.items() if match}


def record(args: argparse.Namespace) -> dict[str, Any]:
    """The summary of one CI run."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or "unknown",
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "main": {**junit_counts(args.main), "seconds": args.main_seconds},
        "torch_free": {**junit_counts(args.torch_free), "seconds": args.torch_free_seconds},
        "worst": json.loads(args.worst.read_text()),
        "demo": demo_figures(args.demo.read_text()),
    }


def load(path: Path = SUMMARY) -> dict[str, Any]:
    """The recorded summary the docs render."""
    return json.loads(path.read_text())


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def suite_markdown(summary: dict[str, Any] | None = None) -> str:
    """The suite's counts and worst errors as the docs show them."""
    s = load() if summary is None else summary
    main, free = s["main"], s["torch_free"]
    lines = [
        f"Recorded by `.ci/run` on commit `{s['commit']}` ({s['recorded'][:10]}, {s['machine']}):",
        "",
        "| run | passed | skipped | failed | time |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| default suite, `pytest -n 2` | {main['passed']:,} | {main['skipped']:,} "
        f"| {main['failed']} | {_duration(main['seconds'])} |",
        f"| without torch (`.[test]`) | {free['passed']:,} | {free['skipped']:,} "
        f"| {free['failed']} | {_duration(free['seconds'])} |",
        "",
        "Worst errors the default suite measured (relative to the reference's max-abs; the "
        "gates are on the [parity page](parity.md#the-tolerance-policy)), as `pytest` prints "
        "them at the end of a run:",
        "",
        "| compared | worst errors |",
        "| --- | --- |",
    ]
    for label, kinds in sorted(s["worst"].items()):
        cells = ", ".join(f"{kind} {err:.2e}" for kind, err in kinds.items())
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write the summary of a CI run")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--main", type=Path, required=True)
    rec.add_argument("--main-seconds", type=float, required=True)
    rec.add_argument("--torch-free", type=Path, required=True)
    rec.add_argument("--torch-free-seconds", type=float, required=True)
    rec.add_argument("--worst", type=Path, required=True)
    rec.add_argument("--demo", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = record(args)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(suite_markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
