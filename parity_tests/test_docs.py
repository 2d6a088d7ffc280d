"""The documentation holds: every code block that claims to run runs, the generated figures are
current, every public name has a docstring, and the CLI pages are what ``seres`` prints.

**Code blocks.** Every fenced ``python`` and ``bash`` block of ``README.md`` and ``docs/**.md``
runs, each in a fresh directory, unless an HTML comment right above it says otherwise; fences of
other languages (``console`` transcripts, ``text`` output) are never run. The comments:

* ``<!-- docs-test: skip: REASON -->``: not run; the reason is required and is reported;
* ``<!-- docs-test: slow -->``: run under ``pytest -m slow`` only;
* ``<!-- docs-test: id: NAME -->``: names the block; ``CHECKS[NAME]`` then checks what it made;
* ``<!-- docs-test: continues -->``: the block goes on from the page's previous ``python`` or
  ``bash`` block, which runs first in the same directory;
* ``<!-- docs-test: setup: A, B -->`` (anywhere on a page): files every block of the page starts
  from, made by ``SETUPS`` (the notebook's checkpoints, a photo folder, a trained run, an
  offline hub cache holding ``timm/seresnet50.a1_in1k``, a timm ``args.yaml``).

Otherwise each block runs alone, so a page's blocks can run on different test workers. Python
blocks run in this process
(``exec``), bash blocks in ``bash -euo pipefail`` with the installed ``seres`` first on ``PATH``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = ("python", "bash")
_FENCE = re.compile(r"^```([\w-]*)\s*$")
_MARKER = re.compile(r"^<!-- docs-test: (skip|slow|id|setup|continues)(?:: (.*?))? -->$")


@dataclass
class Block:
    """One fenced block and what the comments above it say."""

    page: Path
    line: int
    lang: str
    code: str
    skip: str | None = None
    slow: bool = False
    name: str | None = None
    setups: list[str] = field(default_factory=list)
    previous: Block | None = None  # the block it continues from

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUNNABLE and self.skip is None

    @property
    def needs_torch(self) -> bool:
        words = ("torch", "seres parity", ".pt ", ".pth")
        return (
            any(w in self.code for w in words)
            or any(s in _TORCH_SETUPS for s in self.setups)
            or (self.previous is not None and self.previous.needs_torch)
        )

    def chain(self) -> list[Block]:
        """The blocks to run, in order, for this one."""
        return [*(self.previous.chain() if self.previous else []), self]


def parse_page(page: Path) -> list[Block]:
    """The page's fenced blocks with their markers; a marker that is not followed by a fence
    (blank lines and other markers between are fine) is an error."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    pending: dict[str, Any] = {}
    setups: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if marker := _MARKER.match(line):
            kind, value = marker.groups()
            if kind == "setup":
                setups += [s.strip() for s in (value or "").split(",") if s.strip()]
            elif kind in pending or (kind in ("skip", "id") and not value):
                raise ValueError(f"{page}:{i + 1}: bad or repeated marker {line!r}")
            else:
                pending[kind] = value or True
        elif fence := _FENCE.match(line):
            end = next(j for j in range(i + 1, len(lines)) if lines[j] == "```")
            block = Block(
                page, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n",
                skip=pending.get("skip"), slow=bool(pending.get("slow")), name=pending.get("id"),
            )  # fmt: skip
            if pending.get("continues"):
                earlier = [b for b in blocks if b.lang in RUNNABLE]
                if not earlier:
                    raise ValueError(f"{page}:{i + 1}: continues no earlier block")
                block.previous = earlier[-1]
            blocks.append(block)
            pending, i = {}, end
        elif line.strip() and pending and not line.startswith("<!--"):
            raise ValueError(f"{page}:{i + 1}: docs-test marker not followed by a code block")
        i += 1
    for block in blocks:
        block.setups = setups
    return blocks


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in parse_page(page)]


# ------------------------------------------------------------------------------------- setups


def _notebook_checkpoints(here: Path, env: dict[str, str]) -> None:
    import torch

    import seres_torch as st
    from seres_torch.resnet import create_model

    torch.manual_seed(0)
    torch.save(st.SEResNetTiny().state_dict(), here / "se_resnet_tiny.pt")
    torch.save(create_model("seresnet50").state_dict(), here / "seresnet50.pth")


def _photos(here: Path, env: dict[str, str]) -> None:
    from .photos import make_image_folder

    make_image_folder(here / "photos", classes=3, per_class=8, val_per_class=4)


def _cached(name: str, make: Callable[[Path], None]) -> Path:
    """A directory made once per test process (the setups below cost seconds)."""
    root = _CACHE_ROOT[0]
    target = root / name
    if not target.exists():
        staging = root / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        make(staging)
        staging.rename(target)
    return target


def _photos_run(here: Path, env: dict[str, str]) -> None:
    def train(into: Path) -> None:
        _photos(into, env)
        _run_bash(
            "seres train --model seresnet18:channels=8-16-32-64 --dataset imagefolder "
            "--data-dir photos --image-size 32 --epochs 2 --batch-size 8 --workdir runs/photos "
            "--no-progress\n",
            into, env,
        )  # fmt: skip

    shutil.copytree(_cached("photos-run", train) / "runs", here / "runs", dirs_exist_ok=True)


def _hub_seresnet50(here: Path, env: dict[str, str]) -> None:
    """An offline hub cache holding ``timm/seresnet50.a1_in1k`` as timm's ``save_for_hf``
    lays it out (random weights: nothing can be downloaded here)."""

    def make(into: Path) -> None:
        import torch
        from safetensors.torch import save_file

        from seres_jax.export import timm_config
        from seres_jax.registry import data_config
        from seres_torch.resnet import create_model

        from .hub_cache import make_hub_cache

        torch.manual_seed(0)
        save_file(create_model("seresnet50").state_dict(), into / "model.safetensors")
        config = timm_config("seresnet50", data_config("seresnet50.a1_in1k"))
        make_hub_cache(into / "hub", "timm/seresnet50.a1_in1k", {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": into / "model.safetensors",
        })  # fmt: skip

    env.update(HF_HUB_CACHE=str(_cached("hub-seresnet50", make) / "hub"), HF_HUB_OFFLINE="1")


def _timm_args(here: Path, env: dict[str, str]) -> None:
    run = here / "output" / "train" / "20261207-seresnet50"
    run.mkdir(parents=True)
    shutil.copy(ROOT / "parity_tests" / "fixtures" / "timm_args" / "head_rsb_a1.yaml",
                run / "args.yaml")  # fmt: skip


SETUPS: dict[str, Callable[[Path, dict[str, str]], None]] = {
    "notebook-checkpoints": _notebook_checkpoints,
    "photos": _photos,
    "photos-run": _photos_run,
    "hub-seresnet50": _hub_seresnet50,
    "timm-args": _timm_args,
}
_TORCH_SETUPS = ("notebook-checkpoints", "hub-seresnet50")
_CACHE_ROOT: list[Path] = []  # the session's directory for _cached, set by setup_cache


# ------------------------------------------------------------------------------------- checks


def _check_notebook_conversion(ns: dict[str, Any], here: Path) -> None:
    assert list(ns["torch_state"]) == list(ns["state_dict"])


def _check_readme_conversion(ns: dict[str, Any], here: Path) -> None:
    import torch

    assert list(ns["back"]) == list(ns["state_dict"])
    assert all(torch.equal(ns["back"][k], v) for k, v in ns["state_dict"].items())


def _check_own_loop(ns: dict[str, Any], here: Path) -> None:
    assert int(ns["state"].step) == ns["total"] == 11
    assert float(ns["metrics"]["loss"]) < 2.0 < np.log(10)  # below chance: it learnt
    assert np.isfinite(ns["val"]["loss"]) and 0 <= ns["val"]["acc"] <= 1


def _check_nnx_loop(ns: dict[str, Any], here: Path) -> None:
    from safetensors.numpy import load_file

    from seres_jax import nnx as snnx
    from seres_jax.convert import torch_to_flax
    from seres_jax.registry import variables_template

    assert int(ns["optimizer"].step[...]) == ns["total"]
    assert ns["val"]["acc"] > 0.5  # it learnt (chance: 0.1)
    saved = load_file(here / "tiny_nnx.safetensors")
    state = snnx.to_state_dict(ns["model"])
    assert set(saved) == set(state)
    assert all(np.array_equal(saved[k], np.asarray(v)) for k, v in state.items())
    torch_to_flax(saved, variables_template(ns["arch"]))  # strict


def _check_two_processes(ns: dict[str, Any], here: Path) -> None:
    """Both processes exported the weights they trained together: the same tensors."""
    from safetensors.numpy import load_file

    first, second = load_file(here / "p0.safetensors"), load_file(here / "p1.safetensors")
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)


def _check_zoo_load(ns: dict[str, Any], here: Path) -> None:
    assert ns["variables"]["params"]["fc"]["kernel"].shape == (2048, 1000)


CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "notebook-conversion": _check_notebook_conversion,
    "readme-conversion": _check_readme_conversion,
    "own-loop": _check_own_loop,
    "nnx-loop": _check_nnx_loop,
    "zoo-load": _check_zoo_load,
    "two-processes": _check_two_processes,
}


# ------------------------------------------------------------------------------- running them


def _run_bash(code: str, here: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=here, env=env, capture_output=True,
        text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n"
        f"{done.stderr[-4000:]}"
    )


def _params() -> list[Any]:
    params = []
    for block in all_blocks():
        if not block.runs:
            continue
        marks = [pytest.mark.slow] if block.slow else []
        if block.needs_torch:
            marks.append(pytest.mark.requires_torch)
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


@pytest.fixture(scope="session")
def setup_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _CACHE_ROOT[:] = [tmp_path_factory.mktemp("docs-setups")]
    return _CACHE_ROOT[0]


@pytest.mark.parametrize("block", _params())
def test_doc_block_runs(block: Block, tmp_path, monkeypatch, setup_cache):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "100"}  # fmt: skip
    for name in block.setups:
        SETUPS[name](tmp_path, env)
    monkeypatch.chdir(tmp_path)
    for key in ("HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    namespace: dict[str, Any] = {}
    for step in block.chain():
        if step.lang == "bash":
            _run_bash(step.code, tmp_path, env)
        else:
            exec(compile(step.code, step.id, "exec"), namespace)
    if block.name is not None:
        CHECKS[block.name](namespace, tmp_path)


# ------------------------------------------------------------------ what the markers promise


def test_markers_are_well_formed():
    """Every page parses; each setup and check named exists; every check names a block; a
    skip says why; and the pages run enough of their code to mean something."""
    blocks = all_blocks()
    named = {b.name for b in blocks if b.name}
    assert named == set(CHECKS), f"checks and named blocks differ: {named ^ set(CHECKS)}"
    for block in blocks:
        assert set(block.setups) <= set(SETUPS), f"{block.id}: unknown setup {block.setups}"
        assert block.skip is None or len(block.skip) > 10, f"{block.id}: say why it is skipped"
        assert not (block.slow and block.skip), f"{block.id}: slow and skipped"
        assert block.previous is None or block.previous.runs, f"{block.id}: continues a skip"
    runnable = [b for b in blocks if b.lang in RUNNABLE]
    run = [b for b in runnable if b.runs]
    print(f"{len(runnable)} python/bash blocks: {len(run)} run "
          f"({sum(not b.slow for b in run)} by default, {sum(b.slow for b in run)} slow), "
          f"{len(runnable) - len(run)} skipped:")  # fmt: skip
    for block in runnable:
        if block.skip:
            print(f"  {block.id}: {block.skip}")
    assert len(run) >= 15


def test_a_stray_marker_is_an_error(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- docs-test: slow -->\nsome prose\n\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="not followed by a code block"):
        parse_page(page)
    page.write_text("<!-- docs-test: skip -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="bad or repeated marker"):
        parse_page(page)


# -------------------------------------------------------------------------- generated figures


def test_readme_headline_is_current():
    """The README's figures are the generator's, from the recorded measurements."""
    from docs.seres_docs import figures

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert figures.readme_block(text) == figures.headline(), (
        "README.md's headline is stale: python -m docs.seres_docs.figures readme"
    )


def test_ci_summary_is_a_recorded_green_run():
    """The suite's figures come from a real ``.ci/run`` of a commit in this history, which
    passed."""
    from docs.seres_docs.suite import load

    summary = load()
    assert summary["main"]["failed"] == 0 and summary["torch_free"]["failed"] == 0
    assert summary["main"]["passed"] > 1000 and summary["torch_free"]["passed"] > 260
    assert "fp32" in summary["worst"] and any(k.startswith("bf16") for k in summary["worst"])
    if (ROOT / ".git").exists():
        known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e",
                                f"{summary['commit']}^{{commit}}"], check=False)  # fmt: skip
        assert known.returncode == 0, f"commit {summary['commit']} is not in this history"


def test_every_generator_renders():
    """Each ``<!-- generate: NAME -->`` the pages use is known to the hook and renders (the CLI
    help is checked below)."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    used = {m for page in PAGES for m in hooks.DIRECTIVE.findall(page.read_text())}
    assert used == set(hooks.GENERATORS)
    for name, generate in hooks.GENERATORS.items():
        if name != "cli-help":
            assert generate().strip(), name


def test_zoo_tables_cover_every_registered_zoo_model():
    from docs.seres_docs import figures
    from seres_jax.resnet import ZOO
    from seres_jax.senet import LEGACY_ZOO

    families, legacy = figures.zoo_families(), figures.legacy_zoo()
    assert all(f" {name} (" in families for name in ZOO)
    assert all(f"| {name} |" in legacy for name in LEGACY_ZOO)


# ------------------------------------------------------------------------------ API reference


def test_every_public_name_in_the_reference_has_a_docstring():
    pytest.importorskip("griffe", reason="the docs extra is not installed")
    from docs.seres_docs.api import inventory

    found = inventory()
    print(f"{len(found.names)} public names in the API reference, {len(found.missing)} "
          f"without a docstring")  # fmt: skip
    assert len(found.names) > 500
    assert found.missing == []


def test_every_public_module_has_a_reference_page():
    """A package module whose name does not start with ``_`` and that a user imports is on a
    page: the pages' modules, their submodules re-exported by a package page, and nothing else."""
    from docs.seres_docs.api import reference_modules

    pages = set(reference_modules())
    covered_by_package = ("seres_jax.train.", "seres_jax.data.")
    for package in ("seres_jax", "seres_torch"):
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            if module.startswith(covered_by_package) or any(
                part.startswith("_") for part in module.split(".")
            ):
                continue
            assert module in pages, f"{module} has no page in docs/reference/"


# ------------------------------------------------------------------------------- CLI reference


def _parser_commands() -> list[tuple[str, ...]]:
    from seres_cli.main import _parser

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [prefix]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += walk(sub, (*prefix, name))
        return found

    return walk(_parser(), ())


def _in_process_help(command: tuple[str, ...], monkeypatch) -> str:
    from seres_cli.main import main

    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*command, "--help"])
    return out.getvalue()


def test_cli_reference_lists_every_command():
    from docs.seres_docs.cli import COMMANDS

    assert sorted(COMMANDS) == sorted(_parser_commands())


@pytest.mark.parametrize(
    "command", [pytest.param(("convert",), id="convert"),
                pytest.param(("train",), id="train", marks=pytest.mark.slow)],
)  # fmt: skip
def test_cli_reference_is_what_seres_prints(command, monkeypatch):
    """The page's text (the installed ``seres`` in a subprocess) is the parser's own help."""
    from docs.seres_docs.cli import help_text

    assert help_text(command) == _in_process_help(command, monkeypatch)


@pytest.mark.slow
def test_cli_reference_page_is_every_commands_help(monkeypatch):
    from docs.seres_docs.cli import COMMANDS, cli_markdown

    page = cli_markdown()
    for command in COMMANDS:
        assert _in_process_help(command, monkeypatch).rstrip() in page


# ------------------------------------------------------------------------------------- rules


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for each import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
    return found


def test_dependency_rules_hold():
    """The architecture page's rules: ``seres_torch`` never imports ``seres_jax``; nothing
    imports ``seres_cli``; ``seres_jax`` imports torch only inside a function."""
    for path in ROOT.glob("seres_torch/**/*.py"):
        assert not [m for m, _ in _imports(path) if m.split(".")[0] == "seres_jax"], path
    outside_cli = [*ROOT.glob("seres_jax/**/*.py"), *ROOT.glob("seres_torch/**/*.py"),
                   *ROOT.glob("seres/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]  # fmt: skip
    for path in outside_cli:
        assert not [m for m, _ in _imports(path) if m.split(".")[0] == "seres_cli"], path
    for path in ROOT.glob("seres_jax/**/*.py"):
        top = [m for m, at_top in _imports(path) if at_top and m.split(".")[0] == "torch"]
        assert not top, f"{path} imports torch at module level"


@pytest.mark.slow
def test_strict_docs_build(tmp_path):
    """``mkdocs build --strict`` (broken links and anchors, unresolved API names, a page left
    out of the navigation, a figure that cannot be generated all fail it); .ci/run runs it too."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "seres_jax.train" / "index.html").exists()
