"""``vlpeft report``: the pipeline's side-by-side summary of routed, plain and blind variants."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.errors import DataError


@app.command()
def report(
    metrics_dir: Annotated[Path, typer.Option("--metrics", help="dir with <task>-<variant>.json metrics")],
    runs_dir: Annotated[
        Path | None, typer.Option("--runs", help="dir with <task>-<variant>/metrics.json of the train stage")
    ] = None,
    out_json: Annotated[Path, typer.Option("--out-json", help="summary metrics JSON (DVC metrics)")] = Path(
        "metrics/summary.json"
    ),
    out_md: Annotated[Path, typer.Option("--out-md", help="Markdown summary")] = Path("reports/summary.md"),
    plot: Annotated[Path | None, typer.Option("--plot", help="bar chart PNG of the headline metrics")] = None,
) -> None:
    """Summarize each task's variants (best, norouting, blind) side by side with image and routing gains."""
    from vlpeft.eval.compare import SETTING_COLUMNS, VARIANTS, summarize, to_markdown
    from vlpeft.io import read_json, write_json, write_text

    summaries = {}
    for task in ("vqa", "caption"):
        runs, settings = {}, {}
        for variant in VARIANTS:
            path = metrics_dir / f"{task}-{variant}.json"
            if not path.is_file():
                continue
            runs[variant] = read_json(path, "metrics file")
            train_metrics = runs_dir / f"{task}-{variant}" / "metrics.json" if runs_dir else None
            if train_metrics is not None and train_metrics.is_file():
                info = read_json(train_metrics, "training metrics")
                model = info.get("model", {})
                settings[variant] = {k: model[k] for k in SETTING_COLUMNS if model.get(k) is not None}
        if runs:
            summaries[task] = summarize(task, runs, settings)
    if not summaries:
        raise DataError(f"{metrics_dir}: no <task>-<variant>.json metrics files found")
    write_json(out_json, summaries)
    write_text(out_md, "# Results\n\n" + "\n".join(to_markdown(s) for s in summaries.values()))
    if plot is not None:
        _plot(summaries, plot)
    typer.echo(Path(out_md).read_text())


def _plot(summaries: dict, path: Path) -> None:
    """One bar group per task: the headline metric of each variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlpeft.io import atomic_path

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.5 * len(summaries), 3.2), squeeze=False)
    for ax, (task, summary) in zip(axes[0], summaries.items(), strict=True):
        key = "overall" if task == "vqa" else "CIDEr"
        names = list(summary["rows"])
        values = [summary["rows"][n].get(key) or 0.0 for n in names]
        bars = ax.bar(names, values, color=["#2b6cb0", "#718096", "#cbd5e0"][: len(names)])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_title(f"{task}: {'accuracy %' if task == 'vqa' else 'CIDEr x100'}")
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
