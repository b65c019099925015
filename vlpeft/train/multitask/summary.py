"""The multi-task summary table: per task and the Table 1 average, one row per trained variant.

Reads each run's ``metrics.json`` (``train_task``'s file: ``test.<task>.score`` and ``test.average``) and
writes Markdown, JSON and a bar plot. Pure apart from the file reading/writing at the edges.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError
from vlpeft.io import read_json, write_json, write_text

COLUMNS = (("vqa", "VQA"), ("gqa", "GQA"), ("nlvr", "NLVR2"), ("caption", "CIDEr"))


def summary_rows(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per run name: routing, trainable %, each task's test score, NLVR2 consistency, average."""
    rows = []
    for name, metrics in runs.items():
        test = metrics.get("test")
        if not isinstance(test, dict) or "average" not in test:
            raise DataError(f"{name}: metrics have no multi-task test scores (test.average)")
        model = metrics.get("model", {})
        row: dict[str, Any] = {
            "run": name,
            "method": model.get("method"),
            "sharing": model.get("sharing"),
            "routing": model.get("routing"),
            "trainable_percent": model.get("percent"),
        }
        for task, label in COLUMNS:
            row[label] = round(float(test[task]["score"]), 2) if task in test else None
        row["NLVR2 consistency"] = round(float(test["nlvr"]["consistency"]), 2) if "nlvr" in test else None
        row["average"] = round(float(test["average"]), 2)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (scores in percent, CIDEr x 100)."""
    keys = ["run", "method", "sharing", "routing", "trainable_percent", *(label for _, label in COLUMNS)]
    keys += ["NLVR2 consistency", "average"]
    headers = {"trainable_percent": "trainable %"}  # every other column is headed by its row key

    def cell(v: Any) -> str:
        return "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(headers.get(k, k) for k in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_names(runs_dir: Path) -> list[str]:
    """Every run directory under ``runs_dir`` that holds a ``metrics.json``, by name."""
    found = sorted(p.parent.name for p in Path(runs_dir).glob("*/metrics.json"))
    if not found:
        raise DataError(f"{runs_dir}: no <run>/metrics.json found")
    return found


def write_summary(
    runs_dir: Path, names: list[str] | None, out_md: Path, out_json: Path, plot: Path | None
) -> list[dict]:
    """Read ``<runs_dir>/<name>/metrics.json`` of every run and write the table, its JSON and the plot.

    ``names`` None (or empty): every run under ``runs_dir`` (``run_names``), so a pipeline whose variants are
    a params table need not repeat their names.
    """
    names = list(names) if names else run_names(runs_dir)
    runs = {n: read_json(Path(runs_dir) / n / "metrics.json", "train metrics") for n in names}
    rows = summary_rows(runs)
    write_text(out_md, markdown(rows))
    write_json(out_json, {"columns": [label for _, label in COLUMNS], "rows": rows})
    if plot is not None:
        _plot(rows, plot)
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlpeft.io import atomic_path

    labels = [label for _, label in COLUMNS] + ["average"]
    fig, ax = plt.subplots(figsize=(7 + 0.4 * max(len(rows) - 2, 0), 3.5))
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(labels))]
        ax.bar(xs, [row.get(k) or 0.0 for k in labels], width, label=f"{row['run']} ({row['routing']})")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
    ax.set_ylabel("test score (%; CIDEr x 100)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
