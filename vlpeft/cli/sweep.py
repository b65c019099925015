"""``vlpeft sweep``: Optuna search over rank × routing type for one task (see ``params.sweep``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.common import ParamsOption, SetOption, load
from vlpeft.tasks import SweepTaskName


@app.command("sweep")
def sweep(
    task_name: Annotated[SweepTaskName, typer.Option("--task", help="the task (vlpeft.tasks)")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", exists=True, file_okay=False, help="dataset root (data synth / data prepare output)"
        ),
    ],
    features: Annotated[
        Path, typer.Option("--features", exists=True, file_okay=False, help="feature store directory")
    ],
    out: Annotated[Path, typer.Option("--out", help="output directory of the sweep")],
    n_trials: Annotated[
        int | None,
        typer.Option(
            "--n-trials",
            min=1,
            help="run N more trials: a study already in the storage (same --out, or sweep.storage) is "
            "extended by N, a new one gets N (default: sweep.n_trials in all, topping the study up to it)",
        ),
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="seconds (sweep.timeout)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="override sweep.workers")] = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Find the best rank and routing type of a task; write best_params.json, table.md and plots to --out."""
    from vlpeft import stages

    task = task_name.value  # a name of the task table
    cfg = load(params, sets)
    summary = stages.sweep(
        cfg,
        task,
        data=data,
        features=features,
        out=out,
        add_trials=n_trials,
        timeout=timeout,
        workers=workers,
    )
    best = summary["best"]
    typer.echo(
        f"sweep {summary['study_name']}: {summary['trials']} trials ({summary['queued_now']} new), "
        f"{summary['states']}; "
        f"best trial {best['number']} value {best['value']:.4f} "
        f"(routing {best['routing']}, rank {best['rank']}) -> {out / 'best_params.json'}"
    )
