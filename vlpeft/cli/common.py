"""Options and helpers shared by every command group."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from vlpeft.config import Params, load_params

ParamsOption = Annotated[
    list[Path] | None,
    typer.Option("--params", "-p", help="params file(s); later files merge over earlier ones"),
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-S", help="override one value, e.g. vqa.peft.routing=mul")
]


def load(params: list[Path] | None, sets: list[str] | None) -> Params:
    """Load and validate the parameter files named on the command line (default ``params.yaml``)."""
    return load_params(params or [Path("params.yaml")], sets or [])


@contextlib.contextmanager
def stage_run(params: Params, stage: str) -> Iterator[Callable[..., None]]:
    """One tracking run around a stage's work; yields ``log(metrics, *artifacts)``.

    The tracking store is checked on entry, so a misconfigured server fails before any work. Results are
    written locally by the stage itself; ``log`` only reports them (numeric values, flattened). With
    ``tracking.enabled: false`` nothing is tracked.
    """
    from vlpeft.config import flatten
    from vlpeft.tracking.session import open_tracker

    with open_tracker(params, stage) as tracker:

        def log(metrics: dict[str, Any], *artifacts: Path) -> None:
            numbers = {
                k: float(v)
                for k, v in flatten(metrics).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            tracker.log_metrics(numbers)
            for path in artifacts:
                if Path(path).exists():
                    tracker.log_artifact(path)

        yield log
