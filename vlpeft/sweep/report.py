"""A finished sweep's outputs: trials (JSON/CSV), the routing × rank table (Markdown + heatmap), best params.

Table and records are pure functions of the trials; ``write_*`` functions do the (atomic) file writing.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from vlpeft.io import atomic_path, write_json, write_text
from vlpeft.sweep.space import value_overrides
from vlpeft.sweep.storage import is_retry


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as plain data (what ``trials.json`` lists)."""
    values = dict(trial.user_attrs.get("values") or trial.params)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "routing": values.get("routing"),
        "rank": values.get("rank"),
        "method": values.get("method"),
        "lr": values.get("lr"),
        "seed": trial.user_attrs.get("seed"),
        "slot": trial.user_attrs.get("slot"),
        "retry_of": trial.system_attrs.get("failed_trial") if is_retry(trial) else None,
        "worker": trial.user_attrs.get("worker"),
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
        "fail_reason": trial.system_attrs.get("fail_reason") or trial.user_attrs.get("error"),
        "metrics": trial.user_attrs.get("metrics", {}),
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }


CSV_FIELDS = ("number", "state", "value", "routing", "rank", "method", "lr", "seed", "slot", "retry_of",
              "worker", "duration_s")  # fmt: skip


def records_csv(records: list[dict[str, Any]]) -> str:
    """The flat columns of the records as CSV text."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def best_params(task: str, best: FrozenTrial) -> dict[str, Any]:
    """The ``best_params.json`` mapping of the best trial, e.g. ``{"vqa": {"peft": {...}, "lr": ...}}``."""
    return value_overrides(task, dict(best.user_attrs.get("values") or best.params))  # type: ignore[arg-type]


def cell_stats(records: list[dict[str, Any]], maximize: bool = True) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (routing, rank): best, mean ± std and count of COMPLETE trials; pruned and failed counts."""
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in records:
        if rec["routing"] is None or rec["rank"] is None:
            continue
        cell = cells.setdefault((rec["routing"], int(rec["rank"])), {"values": [], "pruned": 0, "failed": 0})
        if rec["state"] == "COMPLETE" and rec["value"] is not None:
            cell["values"].append(float(rec["value"]))
        elif rec["state"] == "PRUNED":
            cell["pruned"] += 1
        elif rec["state"] == "FAIL":
            cell["failed"] += 1
    for cell in cells.values():
        vals = cell["values"]
        cell["n"] = len(vals)
        cell["best"] = (max(vals) if maximize else min(vals)) if vals else None
        cell["mean"] = statistics.fmean(vals) if vals else None
        cell["std"] = statistics.stdev(vals) if len(vals) > 1 else None
    return cells


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    if cell["best"] is None:
        return "pruned" if cell["pruned"] else "failed" if cell["failed"] else "–"
    text = f"**{cell['best']:.4f}**"
    if cell["std"] is not None:
        text += f" ({cell['mean']:.4f} ± {cell['std']:.4f}, n={cell['n']})"
    return text


def table_markdown(
    records: list[dict[str, Any]], routings: list[str], ranks: list[int], title: str, maximize: bool = True
) -> str:
    """The routing × rank table: best validation value per cell, mean ± std where a cell has 2+ trials."""
    cells = cell_stats(records, maximize)
    lines = [
        f"# {title}",
        "",
        f"Best validation value per cell ({'higher' if maximize else 'lower'} is better; completed trials); "
        "mean ± std over the cell's completed trials (different seeds or learning rates) where n ≥ 2.",
        "",
        "| routing \\ rank | " + " | ".join(str(r) for r in ranks) + " |",
        "|---|" + "---|" * len(ranks),
    ]
    for routing in routings:
        row = [_cell_text(cells.get((routing, r))) for r in ranks]
        lines.append(f"| `{routing}` | " + " | ".join(row) + " |")
    states: dict[str, int] = {}
    for rec in records:
        states[rec["state"]] = states.get(rec["state"], 0) + 1
    lines += ["", "Trials: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())), ""]
    return "\n".join(lines)


def write_heatmap(path: str | Path, records: list[dict[str, Any]], routings: list[str], ranks: list[int],
                  title: str, maximize: bool = True) -> None:  # fmt: skip
    """Heatmap of the best value per (routing, rank) cell, annotated; empty cells are blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = cell_stats(records, maximize)
    grid = np.full((len(routings), len(ranks)), np.nan)
    for i, routing in enumerate(routings):
        for j, rank in enumerate(ranks):
            cell = cells.get((routing, rank))
            if cell and cell["best"] is not None:
                grid[i, j] = cell["best"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(ranks), 1.2 + 0.6 * len(routings)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis" if maximize else "viridis_r", aspect="auto")
    ax.set_xticks(range(len(ranks)), [str(r) for r in ranks])
    ax.set_yticks(range(len(routings)), routings)
    ax.set_xlabel("rank")
    ax.set_ylabel("routing")
    ax.set_title(title)
    for i, routing in enumerate(routings):
        for j, rank in enumerate(ranks):
            if not math.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="w", fontsize=9)
            elif (routing, rank) in cells:  # tried, but no completed trial: say why the cell is empty
                text = _cell_text(cells[(routing, rank)])
                ax.text(j, i, text, ha="center", va="center", color="0.5", fontsize=8, style="italic")
    fig.colorbar(image, ax=ax, label="best validation value")
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig: Any, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_optuna_plots(study: Any, out_dir: str | Path) -> tuple[list[str], dict[str, str]]:
    """Optimization history, parameter importances and intermediate values as PNG.

    A plot Optuna cannot draw for this study (e.g. importances with fewer than two completed trials or
    one varying parameter) is skipped with its reason. Returns (written file names, skipped name -> reason).
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as ovm

    plots = {
        "optimization_history.png": ovm.plot_optimization_history,
        "param_importances.png": ovm.plot_param_importances,
        "intermediate_values.png": ovm.plot_intermediate_values,
    }
    written, skipped = [], {}
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    for name, plot in plots.items():
        if name == "param_importances.png":
            keys = {k for t in completed for k in t.params}
            varying = [k for k in keys if len({str(t.params.get(k)) for t in completed}) > 1]
            if len(completed) < 2 or not varying:
                skipped[name] = f"needs 2+ completed trials with a varying parameter (have {len(completed)})"
                continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
        except Exception as exc:  # Optuna refuses some studies (e.g. importances of a single value)
            skipped[name] = " ".join(str(exc).split())[:200] or type(exc).__name__
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
        _save_figure(fig, Path(out_dir) / name)
        written.append(name)
    return written, skipped


def write_records(out_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """``trials.json`` (everything) and ``trials.csv`` (flat columns)."""
    write_json(Path(out_dir) / "trials.json", records)
    write_text(Path(out_dir) / "trials.csv", records_csv(records))
