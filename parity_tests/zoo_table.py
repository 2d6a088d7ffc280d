"""The zoo report's table, rendered from ``benchmarks/zoo_report.json``'s rows.

Apart from ``zoo_report`` (which imports torch to measure) so that the docs build renders the
table without torch.
"""

from __future__ import annotations

from typing import Any


def _e(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    head = (
        "| model | parameters | state_dict entries | round trip | reduced input "
        "| eval: output / input grad / param grad | train: output / input grad / param grad "
        "/ running stats | seres_torch vs timm (eval / train) | Flax vs timm eval logits "
        "(Flax / PyTorch fp32, each vs float64) |\n|---|---:|---:|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, r in rows.items():
        ev, tr = r["eval"], r["train"]
        gates = "" if r["eval_holds_fp32_gates"] and r["train_holds_fp32_gates"] else " (over!)"
        timm = r.get("timm")
        torch_col = (
            f"{_e(timm['torch_vs_timm_eval'])} / {_e(timm['torch_vs_timm_train'])}"
            if timm
            else "not run"
        )
        flax_col = (
            f"{_e(timm['flax_vs_timm_eval'])} ({_e(timm['flax_vs_float64_eval'])} / "
            f"{_e(timm['torch_fp32_vs_float64_eval'])})"
            if timm
            else "not run"
        )
        lines.append(
            f"| {name} | {r['params']:,} | {r['entries']:,} | {r['round_trip']} "
            f"| {'×'.join(map(str, r['reduced_input']))} "
            f"| {_e(ev['output'])} / {_e(ev['input_grad'])} / {_e(ev['param_grad'])}{gates} "
            f"| {_e(tr['output'])} / {_e(tr['input_grad'])} / {_e(tr['param_grad'])} / "
            f"{_e(tr['running_stats'])} | {torch_col} | {flax_col} |"
        )
    return head + "\n".join(lines) + "\n"
