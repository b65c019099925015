"""CLI commands of the `params` group (see vlpeft/cli/__init__.py for the rules).

``vlpeft params count`` builds the model a params file describes on the meta device (no weights, no
download) and prints its trainable parameters and their percentage (``vlpeft.models.accounting``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.choices import Convention, Family, Section
from vlpeft.cli.common import ParamsOption, SetOption, load

params_app = typer.Typer(name="params", help="Inspect what a params file describes.", no_args_is_help=True)
app.add_typer(params_app, name="params")


@params_app.command("count")
def count(
    params: ParamsOption = None,
    sets: SetOption = None,
    section: Annotated[Section, typer.Option(help="training section whose peft settings apply")] = "vqa",
    family: Annotated[
        Family | None, typer.Option(help="model family; default: that of the section's task")
    ] = None,
    convention: Annotated[
        Convention, typer.Option(help="vl_adapter (VL-Adapter's Table 1) or whole (the routing paper)")
    ] = "vl_adapter",
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="print the report as JSON")] = False,
) -> None:
    """Trainable parameters and % of the model of SECTION (meta device: no weights are read or fetched)."""
    from vlpeft.models.accounting import count_params

    report = count_params(load(params, sets), section, family, convention)
    if as_json:
        typer.echo(json.dumps(report))
        return
    groups = ", ".join(f"{k} {v:,}" for k, v in report["by_group"].items() if v)
    typer.echo(
        f"{report['method']} ({report['family']}, {report['convention']}): {report['trainable']:,} / "
        f"{report['total']:,} trainable = {report['percent']:.2f} %  [{groups}]"
    )
