"""``vlpeft <command>``: parse, load the config, call one library function, write outputs.

This package is the only code that joins parameter values (``params.yaml``) with paths (``dvc.yaml`` or the
Kubeflow pipeline). One module per command group keeps each small.
"""

from __future__ import annotations

import os
import sys

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning. On a busy 2-core
# machine spinning threads made a 2-thread training step 13x slower than 1 thread (5.4 s vs 0.42 s, ViT
# pretraining step, load average 8); passive waiting keeps 2 threads within 1.3x of 1 thread there and
# still uses both cores on a quiet machine. Inherited by sweep workers; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from rich.console import Console

from vlpeft.cli.common import ParamsOption, SetOption, load
from vlpeft.errors import as_user_error

app = typer.Typer(
    name="vlpeft",
    help="Vision-language PEFT with routing functions: data, training, evaluation, sweeps, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
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
    # Imported here so that `vlpeft --help` stays fast and each group registers itself on `app`.
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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user mistakes become one line on stderr and exit code 2."""
    _register()
    try:
        result = app(args=argv, standalone_mode=False)
    except typer.Abort:
        return 130
    except typer.exceptions.TyperException as exc:  # usage errors: typer prints them like click does
        exc.show()
        return 2
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
