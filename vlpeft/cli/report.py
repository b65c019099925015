"""``vlpeft report``: each task's variants side by side over seeds (``vlpeft.eval.compare`` does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app


@app.command()
def report(
    metrics_dir: Annotated[
        Path,
        typer.Option(
            "--metrics",
            exists=True,
            file_okay=False,
            help="dir with the <task>-<variant>-<seed>.json headline metrics",
        ),
    ],
    runs_dir: Annotated[
        Path | None,
        typer.Option(
            "--runs",
            exists=True,
            file_okay=False,
            help="dir with <task>-<variant>-<seed>/metrics.json of train",
        ),
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
    from vlpeft import stages

    result = stages.summary(metrics_dir, out_json=out_json, out_md=out_md, plot=plot, runs_dir=runs_dir)
    typer.echo(result["markdown"])
