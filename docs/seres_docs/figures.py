"""Tables and headline figures rendered from their measurements, never typed by hand.

* the benchmark report from ``benchmarks/results.json`` (``bench.py``'s own renderer);
* the zoo's tables from ``benchmarks/zoo_report.json`` (``parity_tests/zoo_report.py``) and the
  registry's model configurations;
* the test suite's counts, worst errors and the demo's figures from ``docs/data/ci_summary.json``
  (``docs/seres_docs/suite.py``);
* the README's headline block, the same figures in a few lines: ``python -m
  docs.seres_docs.figures readme`` rewrites it, and a test fails when it is stale.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from .suite import load

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results.json"
ZOO_REPORT = ROOT / "benchmarks" / "zoo_report.json"
README = ROOT / "README.md"
_README_BLOCK = re.compile(
    r"(<!-- generated: headline \(docs/seres_docs/figures.py\) -->\n)(.*?)(<!-- /generated -->)",
    re.DOTALL,
)


def _results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())


def _zoo_rows() -> dict[str, dict[str, Any]]:
    return json.loads(ZOO_REPORT.read_text())["models"]


def benchmark_report() -> str:
    """``benchmarks/results.md`` as ``bench.py`` renders it, headings moved under the page's."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from seres_bench.report import render_markdown
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text = render_markdown(_results())
    text = text.split("\n", 1)[1] if text.startswith("# ") else text
    return re.sub(r"^## ", "### ", text, flags=re.MULTILINE)


# The zoo's families, each recognised by the options that make it one (first match wins).
_FAMILIES: list[tuple[str, Any]] = [
    ("pruned ECA-ResNet-D (`block_widths`)", lambda c: "block_widths" in c),
    ("SENet-154 (3×3 strided shortcuts, halved first widths, 64 groups)",
     lambda c: c.get("down_kernel_size") == 3),
    ('anti-aliased (`aa_layer="avg"`)', lambda c: "aa_layer" in c),
    ("ECA-ResNeXt-T", lambda c: c.get("attn") == "eca" and c.get("cardinality", 1) > 1),
    ("ECA-ResNet", lambda c: c.get("attn") == "eca"),
    ("SE-ResNeXt-D/T", lambda c: c.get("cardinality", 1) > 1 and c.get("stem_type")),
    ("SE-ResNeXt", lambda c: c.get("cardinality", 1) > 1),
    ("SE-ResNet-D/T (deep or tiered stem, average-pool shortcuts)", lambda c: c.get("stem_type")),
    ("SE-ResNet", lambda c: True),
]  # fmt: skip


def zoo_families() -> str:
    """The timm-layout zoo by family, with each model's parameter count (millions)."""
    from seres_jax.resnet import ZOO

    rows = _zoo_rows()
    members: dict[str, list[str]] = {label: [] for label, _ in reversed(_FAMILIES)}
    for name, config in ZOO.items():
        label = next(label for label, test in _FAMILIES if test(config))
        members[label].append(f"{name} ({rows[name]['params'] / 1e6:.1f})")
    lines = ["| family | models (parameters, millions) |", "| --- | --- |"]
    lines += [f"| {label} | {', '.join(names)} |" for label, names in members.items() if names]
    return "\n".join(lines) + "\n"


def legacy_zoo() -> str:
    """The SENet authors' models: parameters and ``state_dict`` entries."""
    from seres_jax.senet import LEGACY_ZOO

    rows = _zoo_rows()
    lines = ["| model | parameters | state_dict entries |", "| --- | ---: | ---: |"]
    lines += [f"| {n} | {rows[n]['params']:,} | {rows[n]['entries']:,} |" for n in LEGACY_ZOO]
    return "\n".join(lines) + "\n"


def zoo_report() -> str:
    """Every zoo model as ``parity_tests/zoo_report.py`` measured it, and its versions."""
    if str(ROOT) not in sys.path:  # mkdocs' entry point does not put the repository there
        sys.path.insert(0, str(ROOT))
    from parity_tests.zoo_table import markdown

    versions = json.loads(ZOO_REPORT.read_text())["versions"]
    said = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"Measured with {said}.\n\n" + markdown(_zoo_rows())


_GRADS = ("output", "input_grad", "param_grad")


def zoo_summary() -> dict[str, Any]:
    """The zoo report's worst figures over every model."""
    rows = _zoo_rows()
    timm = [r["timm"] for r in rows.values() if r.get("timm")]

    def worst(mode: str, kind: str) -> float:
        return max(r[mode][kind] for r in rows.values())

    return {
        "models": len(rows),
        "bit_exact": sum(r["round_trip"] == "bit-exact" for r in rows.values()),
        "timm_exact": sum(
            t["torch_vs_timm_eval"] == 0 and t["torch_vs_timm_train"] == 0 for t in timm
        ),
        "timm_measured": len(timm),
        "worst": {
            f"{m} {k}": worst(m, k)
            for m, kinds in (("eval", _GRADS), ("train", (*_GRADS, "running_stats")))
            for k in kinds
        },
        "full_size_ratio": max(
            t["flax_vs_float64_eval"] / t["torch_fp32_vs_float64_eval"] for t in timm
        ),
    }


def zoo_summary_markdown() -> str:
    """The zoo report's worst figures as the zoo page states them."""
    z = zoo_summary()
    w = z["worst"]
    return "\n".join([
        f"- the round trip is **bit-exact** for {z['bit_exact']} of {z['models']} models; "
        f"`seres_torch` computes timm's logits **exactly** (0 difference, eval and train) for "
        f"{z['timm_exact']} of the {z['timm_measured']} run against timm;",
        f"- reduced size, worst over the {z['models']}: eval output {w['eval output']:.1e}, input "
        f"gradient {w['eval input_grad']:.1e}, parameter gradient {w['eval param_grad']:.1e}; "
        f"train output {w['train output']:.1e}, input gradient {w['train input_grad']:.1e}, "
        f"parameter gradient {w['train param_grad']:.1e}, running statistics "
        f"{w['train running_stats']:.1e} (gates 1e-5 / 1e-4 / 1e-4 / 1e-5);",
        f"- full size, Flax's eval logits against timm float64 stay within "
        f"**{z['full_size_ratio']:.1f}×** of PyTorch float32's own error for every model.",
    ]) + "\n"  # fmt: skip


def _ratio(config: dict[str, Any], metric: str, a: str, b: str) -> str:
    values = config[metric]
    if values.get(a) is None or values.get(b) is None:
        return "not measured"
    return f"{values[a] / values[b]:.2f}×"


def headline() -> str:
    """The figures the README and the home page lead with (Markdown bullets)."""
    suite, zoo, results = load(), zoo_summary(), _results()
    fp32, demo = suite["worst"].get("fp32", {}), suite["demo"]
    r50 = results["configs"].get("seresnet50") or next(iter(results["configs"].values()))
    return "\n".join([
        f"- **Parity**, float32, worst over the default suite: outputs "
        f"{fp32.get('output', 0):.1e}, input gradients {fp32.get('input_grad', 0):.1e}, "
        f"parameter gradients {fp32.get('param_grad', 0):.1e}, running statistics "
        f"{fp32.get('running_stats', 0):.1e} (gates 1e-5 / 1e-4 / 1e-4 / 1e-5).",
        f"- **The zoo**: {zoo['models']} timm models; the PyTorch → Flax → PyTorch round trip is "
        f"bit-exact for {zoo['bit_exact']}; `seres_torch` computes timm's logits exactly for "
        f"{zoo['timm_exact']} of {zoo['timm_measured']}; at full size Flax stays within "
        f"{zoo['full_size_ratio']:.1f}× of PyTorch float32's own error.",
        f"- **`seres demo`**: test accuracy JAX {demo['jax_accuracy']:.2f} %, PyTorch "
        f"{demo['torch_accuracy']:.2f} % with the same exported weights, largest logit "
        f"difference {demo['logit_difference']:.1e}, {demo['wall_s']:.0f} s.",
        f"- **Speed** ({r50['arch']}, {results['machine']['cores']}-core CPU, "
        f"JAX ÷ PyTorch eager): training {_ratio(r50, 'train_img_s', 'jax', 'torch_eager')}, "
        f"inference {_ratio(r50, 'infer_img_s', 'jax', 'torch_eager')}.",
        f"- **Tests**: {suite['main']['passed']:,} pass in the default suite "
        f"({round(suite['main']['seconds'] / 60)} min on 2 cores), "
        f"{suite['torch_free']['passed']:,} without torch (commit `{suite['commit']}`).",
    ]) + "\n"  # fmt: skip


def readme_block(text: str) -> str:
    """The README's generated block as it stands in ``text``."""
    match = _README_BLOCK.search(text)
    if match is None:
        raise ValueError("README.md has no generated headline block")
    return match.group(2)


def write_readme() -> bool:
    """Rewrites the README's headline block; True when it changed."""
    text = README.read_text()
    readme_block(text)
    new = _README_BLOCK.sub(lambda m: m.group(1) + headline() + m.group(3), text)
    README.write_text(new)
    return new != text


if __name__ == "__main__":
    if sys.argv[1:] != ["readme"]:
        raise SystemExit("usage: python -m docs.seres_docs.figures readme")
    try:
        print("README.md: " + ("updated" if write_readme() else "already current"))
    except (OSError, ValueError) as err:
        raise SystemExit(f"figures: {err}") from None
