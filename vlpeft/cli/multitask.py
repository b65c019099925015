"""``vlpeft multitask summary``: the multi-task table (per task + Table 1 average) of trained variants.

``vlpeft multitask-summary`` is the same command under its earlier name (hidden; scripts and DVC files that
use it keep working).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app

multitask_app = typer.Typer(
    name="multitask", help="VL-Adapter's multi-task setting: summarise its runs.", no_args_is_help=True
)
app.add_typer(multitask_app, name="multitask")


def multitask_summary(
    runs: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="dir holding one train output dir per run")
    ],
    out_md: Annotated[Path, typer.Option(help="Markdown table")],
    out_json: Annotated[Path, typer.Option(help="the table as JSON")],
    names: Annotated[
        list[str] | None,
        typer.Option(
            "--name", help="run dir names in table order (repeatable); default: every run in --runs"
        ),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="bar plot (PNG)")] = None,
    plot_data: Annotated[
        Path | None, typer.Option(help="[{variant, average}] JSON for a `dvc plots` bar chart")
    ] = None,
) -> None:
    """Summarise multi-task runs: VQA, GQA, NLVR2 (+ consistency), CIDEr and their average per variant, at
    the learning rate its validation average chose, mean ± std over seeds."""
    from vlpeft.train.multitask.summary import markdown, write_summary

    rows, grid = write_summary(runs, names, out_md, out_json, plot, plot_data)
    typer.echo(markdown(rows, grid).rstrip())


multitask_app.command("summary")(multitask_summary)
app.command("multitask-summary", hidden=True)(multitask_summary)
