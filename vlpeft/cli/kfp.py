"""``vlpeft kfp compile|submit|run-local``: the Kubeflow pipeline of the same stages (see pipelines/).

Params are loaded and validated first, so a bad value is one error line before anything compiles. The
``pipelines`` and ``components`` packages live at the checkout root (not in the wheel).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.common import ParamsOption, SetOption, load

kfp_app = typer.Typer(
    name="kfp", help="Kubeflow Pipelines: compile, submit, run locally.", no_args_is_help=True
)
app.add_typer(kfp_app, name="kfp")

ImageOption = Annotated[str | None, typer.Option("--image", help="image of every task (default kfp.image)")]


def _pipelines():
    """The checkout's ``pipelines`` package (the project root goes on ``sys.path`` when needed)."""
    from vlpeft.errors import ConfigError
    from vlpeft.tracking.preflight import project_root

    root = str(project_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        from pipelines import compile as pipeline_compile
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{root}: no pipelines/ package here: run vlpeft kfp in a vlpeft checkout ({exc})"
        ) from None
    return pipeline_compile


@kfp_app.command("compile")
def compile_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="pipeline YAML to write")] = Path("pipeline.yaml"),
    image: ImageOption = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Compile the pipeline for the given params into a KFP v2 YAML package."""
    cfg = load(params, sets)
    path = _pipelines().compile_pipeline(cfg, out, image)
    typer.echo(f"wrote {path} (image {image or cfg.kfp.image})")


@kfp_app.command("submit")
def submit_cmd(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")],
    experiment: Annotated[str, typer.Option(help="KFP experiment (reused when it exists)")] = "vlpeft",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace (multi-user)")] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="display name of the run")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="caching off in every DAG, nested too")
    ] = False,
    wait: Annotated[
        float | None, typer.Option(help="wait up to this many seconds for the run to end")
    ] = None,
    package: Annotated[
        Path | None, typer.Option(help="a compiled pipeline YAML (default: compile the given params now)")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="bearer token file (default $KF_PIPELINES_TOKEN, else in-cluster SA)")
    ] = None,
    image: ImageOption = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Submit a run (token: $KF_PIPELINES_TOKEN, --token-file or the in-cluster service account)."""
    import tempfile

    pc = _pipelines()
    with tempfile.TemporaryDirectory(prefix="vlpeft-kfp-") as tmp:
        if package is None:
            package = pc.compile_pipeline(load(params, sets), Path(tmp) / "pipeline.yaml", image)
        result = pc.submit(package, host=host, token=pc.read_token(str(token_file) if token_file else None),
                           experiment=experiment, namespace=namespace, run_name=run_name, no_cache=no_cache,
                           wait=wait)  # fmt: skip
    typer.echo(f"run {result['run_id']}{' ' + result['state'] if result['state'] else ''}: {result['url']}")


@kfp_app.command("run-local")
def run_local_cmd(
    root: Annotated[Path, typer.Option(help="directory for the local run's artifacts")] = Path("kfp-local"),
    cache: Annotated[bool, typer.Option(help="reuse outputs of earlier local runs")] = False,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Run the whole pipeline here with kfp.local (every task a subprocess of this Python, no cluster)."""
    cfg = load(params, sets)
    pc = _pipelines()
    pc.run_local(cfg, root / "pipeline_root", root / "workspace", cache=cache)
    typer.echo(f"pipeline finished; artifacts under {root / 'pipeline_root'}")
