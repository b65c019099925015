"""``vlpeft report``: each task's variants side by side over seeds (``vlpeft.eval.compare`` does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.errors import DataError


@app.command()
def report(
    metrics_dir: Annotated[
        Path, typer.Option("--metrics", help="dir with the <task>-<variant>-<seed>.json headline metrics")
    ],
    runs_dir: Annotated[
        Path | None, typer.Option("--runs", help="dir with <task>-<variant>-<seed>/metrics.json of train")
    ] = None,
    out_json: Annotated[Path, typer.Option("--out-json", help="summary JSON (mean, std, gains)")] = Path(
        "reports/summary.json"
    ),
    out_md: Annotated[Path, typer.Option("--out-md", help="Markdown summary")] = Path("reports/summary.md"),
    plot: Annotated[
        Path | None, typer.Option("--plot", help="PNG: headline metric per variant, spread")
    ] = None,
) -> None:
    """Summarize each task's variants (best, norouting, blind): mean ± std over seeds, image/routing gains."""
    from vlpeft.eval.compare import read_runs, summarize, to_markdown, write_plot
    from vlpeft.io import write_json, write_text

    runs, settings = read_runs(metrics_dir, runs_dir)
    if not runs:
        raise DataError(f"{metrics_dir}: no <task>-<variant>-<seed>.json metrics files found")
    summaries = {task: summarize(task, runs[task], settings.get(task)) for task in runs}
    write_json(out_json, summaries)
    text = "# Results\n\n" + "\n".join(to_markdown(s) for s in summaries.values())
    write_text(out_md, text)
    if plot is not None:
        write_plot(summaries, runs, plot)
    typer.echo(text)
