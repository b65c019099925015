"""Side-by-side comparison of the pipeline's variants: routed vs plain LoRA vs blind (pure, no I/O).

The pipeline trains each task three ways: ``best`` (the sweep's best routing/rank), ``norouting`` (the same
with routing ``none``) and ``blind`` (no image at all). A result that uses the image shows up as a gap to the
blind floor; routing shows up as a gap to ``norouting``. This module turns their metrics into one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VARIANTS: tuple[str, ...] = ("best", "norouting", "blind")
VQA_COLUMNS: tuple[str, ...] = ("overall", "yes/no", "number", "other")
CAPTION_COLUMNS: tuple[str, ...] = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
# What each variant trained, from the train stage's metrics.json ``model`` block.
SETTING_COLUMNS: tuple[str, ...] = ("method", "routing", "rank", "trainable")


def headline(task: str, metrics: Mapping[str, Any]) -> float:
    """The one number a task is judged by: VQA overall accuracy, caption CIDEr (x100, as papers report)."""
    return float(metrics["overall"]) if task == "vqa" else 100.0 * float(metrics["CIDEr"])


def row(task: str, metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The table columns of one variant; caption scores are x100 as the papers print them."""
    if task == "vqa":
        per_type = metrics.get("perAnswerType", {})
        out: dict[str, float | None] = {"overall": float(metrics["overall"])}
        for col in VQA_COLUMNS[1:]:
            out[col] = float(per_type[col]) if col in per_type else None
        return out
    return {
        col: (round(100.0 * float(metrics[col]), 2) if metrics.get(col) is not None else None)
        for col in CAPTION_COLUMNS
    }


def summarize(
    task: str, runs: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Rows per variant plus the two gaps that matter: image gain (vs blind) and routing gain (vs norouting).

    ``runs`` maps a variant name to the official metrics of its test predictions; ``settings`` optionally maps
    it to what was trained (routing, rank, trainable parameters) for the table.
    """
    settings = settings or {}
    rows = {name: {**dict(settings.get(name, {})), **row(task, m)} for name, m in runs.items()}
    scores = {name: headline(task, m) for name, m in runs.items()}
    out: dict[str, Any] = {"task": task, "metric": "overall" if task == "vqa" else "CIDEr", "rows": rows}
    if "best" in scores and "blind" in scores:
        out["image_gain"] = round(scores["best"] - scores["blind"], 2)
    if "best" in scores and "norouting" in scores:
        out["routing_gain"] = round(scores["best"] - scores["norouting"], 2)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def to_markdown(summary: Mapping[str, Any]) -> str:
    """A Markdown table of one task's summary with its gains underneath."""
    task = summary["task"]
    rows: Mapping[str, Mapping[str, Any]] = summary["rows"]
    score_cols = list(VQA_COLUMNS if task == "vqa" else CAPTION_COLUMNS)
    extra = [c for c in SETTING_COLUMNS if any(c in r for r in rows.values())]
    cols = extra + score_cols
    lines = [
        f"### {'VQA (soft accuracy %, official evaluation)' if task == 'vqa' else 'Captioning (x100)'}",
        "",
        "| variant | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    lines.append("")
    metric = summary["metric"]
    if "image_gain" in summary:
        lines.append(f"- image gain (best - blind, {metric}): **{summary['image_gain']:+.2f}**")
    if "routing_gain" in summary:
        lines.append(f"- routing gain (best - norouting, {metric}): **{summary['routing_gain']:+.2f}**")
    return "\n".join(lines) + "\n"
