"""Options and helpers shared by every command group.

Input paths are declared with ``exists=True`` (click checks them while parsing, before a command imports
anything heavy, even the typed config): a mistyped path is one error line at once, not after torch has loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from vlpeft.config import Params

ParamsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--params",
        "-p",
        exists=True,
        dir_okay=False,
        help="params file(s); later files merge over earlier ones",
    ),
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-S", help="override one value, e.g. vqa.peft.routing=mul")
]


def load(params: list[Path] | None, sets: list[str] | None) -> Params:
    """Load and validate the parameter files named on the command line (default ``params.yaml``)."""
    from vlpeft.config import load_params  # building the typed config costs ~0.2 s: not before a path check

    return load_params(params or [Path("params.yaml")], sets or [])
