"""``vlpeft dvc-yaml``: write (or check) dvc.yaml's params and code deps from the stage manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app


@app.command("dvc-yaml")
def dvc_yaml(
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="only report files that disagree with the manifest (exit 1)"),
    ] = False,
    root: Annotated[Path, typer.Option(help="the repository root (dvc.yaml, multitask/)")] = Path("."),
) -> None:
    """Rewrite each stage's `params:` and code `deps:` in dvc.yaml and multitask/dvc.yaml from what the stage
    modules (vlpeft/stages/) declare they read and the code their imports reach; the rest stays as written."""
    from vlpeft.stages.dvcyaml import DVC_FILES, write_or_check

    files = [root / name for name in DVC_FILES]
    changed = write_or_check(files, root, check=check)
    for path in changed:
        typer.echo(f"{path}: {'differs from' if check else 'rewritten from'} the stage manifest")
    if check and changed:
        typer.echo("run `vlpeft dvc-yaml` to rewrite them", err=True)
        raise typer.Exit(1)
    if not changed:
        typer.echo("dvc.yaml files agree with the stage manifest")
