"""``vlpeft <command>``: parse, load the config, call one library function, write outputs.

This package is the only code that joins parameter values (``params.yaml``) with paths (``dvc.yaml`` or the
Kubeflow pipeline). One module per command group keeps each small. Importing it stays cheap (no torch, no
MLflow): commands import what they need when they run, after their paths and params have been checked, so
a mistyped path is answered at once.
"""

from __future__ import annotations

import os
import sys

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning. On a busy 2-core
# machine spinning threads made a 2-thread training step 13x slower than 1 thread (5.4 s vs 0.42 s, ViT
# pretraining step, load average 8); passive waiting keeps 2 threads within 1.3x of 1 thread there and
# still uses both cores on a quiet machine. Inherited by sweep workers; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from vlpeft.cli.common import ParamsOption, SetOption, load
from vlpeft.cli.switches import normalize_switches
from vlpeft.errors import as_user_error

PIPELINE = "Pipeline (in order)"
MULTITASK = "Multi-task (VL-Adapter)"
TOOLS = "Scoring, inspection, Kubeflow"
# Every top-level command in the order ``vlpeft -h`` lists it, with its help panel: the pipeline's stages as
# they run (data -> pretrain -> features -> sweep -> train -> report -> register -> review), then the rest.
COMMANDS: dict[str, str] = {
    "data": PIPELINE,
    "pretrain": PIPELINE,
    "features": PIPELINE,
    "features-import": PIPELINE,
    "sweep": PIPELINE,
    "train": PIPELINE,
    "report": PIPELINE,
    "register": PIPELINE,
    "registry": PIPELINE,  # registry review (the last stage) and promote
    "multitask": MULTITASK,
    "evaluate": TOOLS,
    "predict": TOOLS,
    "params": TOOLS,
    "config": TOOLS,
    "dvc-yaml": TOOLS,
    "kfp": TOOLS,
    "version": TOOLS,
}


class _OrderedGroup(TyperGroup):
    """Lists commands in ``COMMANDS`` order (typer keeps import order, which is not the pipeline's)."""

    def list_commands(self, ctx) -> list[str]:  # type: ignore[no-untyped-def]
        names = list(self.commands)
        rank = {name: i for i, name in enumerate(COMMANDS)}
        return sorted(names, key=lambda n: rank.get(n, len(rank)))


CONTEXT = {"help_option_names": ["-h", "--help"]}  # inherited by every subcommand's context

app = typer.Typer(
    name="vlpeft",
    cls=_OrderedGroup,
    help="Vision-language PEFT with routing functions: data, training, evaluation, sweeps, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=CONTEXT,
)


def _print_version(value: bool) -> None:
    if value:
        from vlpeft import __version__

        typer.echo(f"vlpeft {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Vision-language PEFT with routing functions."""


@app.command()
def version() -> None:
    """Print the vlpeft version."""
    from vlpeft import __version__

    typer.echo(__version__)


@app.command("config")
def show_config(params: ParamsOption = None, sets: SetOption = None) -> None:
    """Print the resolved configuration (all params files merged, overrides applied, validated)."""
    import yaml

    from vlpeft.config import params_to_dict

    typer.echo(yaml.safe_dump(params_to_dict(load(params, sets)), sort_keys=False).rstrip())


def _register() -> None:
    # Imported here so that each group registers itself on `app`; none of them imports torch at import time.
    from vlpeft.cli import (  # noqa: F401
        data,
        evaluate,
        kfp,
        multitask,
        params,
        pretrain,
        registry,
        report,
        sweep,
        train,
    )

    for command in app.registered_commands:  # typer names a command after its function unless told
        name = command.name or command.callback.__name__.replace("_", "-")  # type: ignore[union-attr]
        command.rich_help_panel = COMMANDS.get(name, command.rich_help_panel)
    for group in app.registered_groups:
        group.rich_help_panel = COMMANDS.get(str(group.name), group.rich_help_panel)


def _usage_error_line(exc: typer.exceptions.TyperException) -> str:
    """A click usage error as one line, with the command whose help explains it."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    where = f" (see: {ctx.command_path} -h)" if ctx is not None else ""
    return f"{message}{where}"


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user mistakes become one line on stderr and exit code 2."""
    _register()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command = typer.main.get_command(app)
        result = command.main(
            args=normalize_switches(command, args), prog_name="vlpeft", standalone_mode=False
        )
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        return 130
    except typer.exceptions.TyperException as exc:  # usage errors: bad option, missing path, bad choice
        from rich.markup import escape

        from vlpeft.redact import redact_text

        line = redact_text(_usage_error_line(exc))  # a mistyped value may be a URL with a password
        Console(stderr=True).print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = as_user_error(exc)  # ours, or a library's (filesystem, safetensors) that the user can fix
        from vlpeft.redact import print_traceback, redact_text

        if error is None:  # a bug: its traceback, minus any credential it quotes (a URL, a --set value)
            print_traceback(exc)
            return 1
        from rich.markup import escape

        line = " ".join(redact_text(str(error)).split())  # one line, never a password
        Console(stderr=True).print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return error.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
