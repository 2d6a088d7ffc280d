"""mkdocs hooks: render each ``<!-- generate: NAME -->`` line of a page from its measurement.

The names and what they render are ``GENERATORS``; an unknown name fails the build, so does a
generator that cannot read its measurement. The generators live in ``docs/seres_docs/``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

# mkdocs loads this file by path: its package, docs/seres_docs, is found beside it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from seres_docs import cli, figures, suite

GENERATORS: dict[str, Callable[[], str]] = {
    "headline": figures.headline,
    "benchmarks": figures.benchmark_report,
    "zoo-families": figures.zoo_families,
    "zoo-legacy": figures.legacy_zoo,
    "zoo-report": figures.zoo_report,
    "zoo-summary": figures.zoo_summary_markdown,
    "suite": suite.suite_markdown,
    "cli-help": cli.cli_markdown,
}
DIRECTIVE = re.compile(r"^<!-- generate: ([\w-]+) -->$", re.MULTILINE)


def render(markdown: str, where: str = "a page") -> str:
    """``markdown`` with every directive replaced by its generator's output."""

    def generate(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(f"{where}: unknown generated figure {name!r}")
        try:
            return GENERATORS[name]()
        except (OSError, KeyError, ValueError, ImportError, RuntimeError) as err:
            raise PluginError(f"{where}: cannot generate {name!r}: {err}") from err

    return DIRECTIVE.sub(generate, markdown)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return render(markdown, page.file.src_path)
