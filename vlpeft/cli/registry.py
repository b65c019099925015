"""``vlpeft register`` and ``vlpeft registry review|promote``: the MLflow model registry.

``register`` logs a trained model (a ``save_vl_model`` dir) as a pyfunc and registers it (alias
``challenger``; also ``champion`` when there is none yet). ``registry review`` writes an HTML report and a
Markdown summary with the challenger beside the champion; ``registry promote`` moves ``champion``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.choices import Split
from vlpeft.cli.common import ParamsOption, SetOption, load
from vlpeft.tasks import TaskName

registry_app = typer.Typer(
    name="registry", help="Review and promote registered models (MLflow registry).", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


@app.command("register")
def register(
    task_name: Annotated[TaskName, typer.Option("--task", help="the task (vlpeft.tasks)")],
    model: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="trained model dir (save_vl_model, e.g. artifacts/train/vqa-best-0/best)",
        ),
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="evaluation metrics JSON of this model")
    ] = None,
    name: Annotated[str | None, typer.Option(help="registered model name (default: params registry)")] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="training history (JSON/CSV records per epoch) for the curves"
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the registered version as JSON here")] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="instead of --model/--metrics/--history: a train run dir; registers its test checkpoint "
            "(best or last, as its metrics.json says) with that run's metrics and curves",
        ),
    ] = None,
    runs: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="instead of --model/--metrics/--history: the dir of train runs; registers the first-seed "
            "run of registry.variant (at the lr the multi-task summary keeps)",
        ),
    ] = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Register a trained model as a pyfunc with its metrics, method, routing, rank, data and code version."""
    from vlpeft import stages

    task = task_name.value
    cfg = load(params, sets)
    record = stages.register(
        cfg, task, model=model, metrics=metrics, history=history, out=out, name=name, run=run, runs=runs
    )
    if not record["registered"]:
        typer.echo(f"tracking.enabled is false: {record['name']} not registered")
        return
    aliases = ", ".join(record["aliases"])
    typer.echo(f"registered {record['name']} version {record['version']} (aliases: {aliases})")


@registry_app.command("review")
def review(
    model: Annotated[str, typer.Option(help="registered model name, e.g. vlpeft-vqa, vlpeft-multitask")],
    out: Annotated[Path, typer.Option(help="directory for review.html, review.md, review.json")],
    data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="data root for sample images (default: <data.root>/<data.source>)",
        ),
    ] = None,
    split: Annotated[Split, typer.Option(help="split the samples come from")] = "test",
    samples: Annotated[
        int | None, typer.Option(help="samples per task (default: registry.review_samples)")
    ] = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Write an HTML report and a Markdown summary: challenger beside champion."""
    from vlpeft import stages

    result = stages.review(load(params, sets), model, out=out, data=data, split=split, samples=samples)
    typer.echo(result["verdict"])
    typer.echo(f"wrote {result['html']} and {result['markdown']}")


@registry_app.command("promote")
def promote(
    model: Annotated[str, typer.Option(help="registered model name, e.g. vlpeft-vqa")],
) -> None:
    """Move the ``champion`` alias to the ``challenger`` version and report what changed."""
    from vlpeft.tracking.registry import promote as do_promote

    result = do_promote(model)
    if not result["changed"]:
        typer.echo(
            f"{model}: champion is already version {result['champion']} (the challenger); nothing changed"
        )
        return
    typer.echo(f"{model}: champion moved from version {result['previous_champion']} to {result['champion']}")
    for key, (old, new) in sorted(result["metrics"].items()):
        typer.echo(f"  {key}: {old:g} -> {new:g} ({new - old:+.4g})")
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "metrics"}))
