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
    name="kfp",
    help="Kubeflow Pipelines: compile, submit, upload, schedule, run locally.",
    no_args_is_help=True,
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


HostOption = Annotated[str, typer.Option(help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")]
NamespaceOption = Annotated[
    str | None, typer.Option(help="Kubeflow profile namespace (required by a multi-user KFP)")
]
TokenFileOption = Annotated[
    Path | None, typer.Option(help="bearer token file (default $KF_PIPELINES_TOKEN, else in-cluster SA)")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="seconds to wait for each answer of the API server")
]
PackageOption = Annotated[
    Path | None, typer.Option(help="a compiled pipeline YAML (default: compile the given params now)")
]


def _package(pc, package: Path | None, params, sets, image, tmp: str) -> Path:
    """The package to send: the given one (then no -p/-S/--image: they would be silently ignored) or
    one compiled now from the params."""
    from vlpeft.errors import ConfigError

    if package is not None:
        if params or sets or image:
            raise ConfigError(
                "--package: already compiled, so -p/-S/--image would be ignored: pass either --package or "
                "params to compile"
            )
        if not package.is_file():
            raise ConfigError(f"--package {package}: no such file")
        return package
    return pc.compile_pipeline(load(params, sets), Path(tmp) / "pipeline.yaml", image)


def _token(pc, token_file: Path | None) -> str | None:
    return pc.read_token(str(token_file) if token_file else None)


@kfp_app.command("submit")
def submit_cmd(
    host: HostOption,
    experiment: Annotated[str, typer.Option(help="KFP experiment (reused when it exists)")] = "vlpeft",
    namespace: NamespaceOption = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="display name of the run")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="caching off in every DAG, nested too")
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(help="wait up to this many seconds for the run to end; exit 1 unless it SUCCEEDED"),
    ] = None,
    package: PackageOption = None,
    pipeline: Annotated[
        str | None, typer.Option(help="run a version of this uploaded pipeline (see vlpeft kfp upload)")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="with --pipeline: the version's name (default: the newest)")
    ] = None,
    token_file: TokenFileOption = None,
    timeout: TimeoutOption = 30.0,
    poll: Annotated[float, typer.Option(help="seconds between polls with --wait", min=0.01)] = 5.0,
    image: ImageOption = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Submit a run (token: $KF_PIPELINES_TOKEN, --token-file or the in-cluster service account)."""
    import tempfile

    from vlpeft.errors import ConfigError

    pc = _pipelines()
    with tempfile.TemporaryDirectory(prefix="vlpeft-kfp-") as tmp:
        if pipeline is not None:
            if package is not None or params or sets or image:
                raise ConfigError(
                    "--pipeline: runs an uploaded version: leave out --package, -p/-S and --image"
                )
            pkg = None
        else:
            if version is not None:
                raise ConfigError("--version: only with --pipeline")
            pkg = _package(pc, package, params, sets, image, tmp)
        result = pc.submit(pkg, host=host, token=_token(pc, token_file), experiment=experiment,
                           namespace=namespace, run_name=run_name, no_cache=no_cache, wait=wait,
                           pipeline=pipeline, version=version, timeout=timeout, poll=poll)  # fmt: skip
    state = result["state"]
    detail = f" {state}" + (f": {result['error']}" if result["error"] else "") if state else ""
    typer.echo(f"run {result['run_id']}{detail} {result['url']}")
    if state is not None and state != "SUCCEEDED":
        raise typer.Exit(1)


@kfp_app.command("upload")
def upload_cmd(
    host: HostOption,
    name: Annotated[str, typer.Option(help="pipeline name (created on its first upload)")] = "vlpeft",
    version: Annotated[str | None, typer.Option(help="version name (default: vlpeft-<UTC time>)")] = None,
    description: Annotated[str, typer.Option(help="version description")] = "",
    namespace: NamespaceOption = None,
    package: PackageOption = None,
    token_file: TokenFileOption = None,
    timeout: TimeoutOption = 30.0,
    image: ImageOption = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Upload the pipeline as a new version of a named pipeline (runs and schedules start from it)."""
    import tempfile
    from datetime import UTC, datetime

    pc = _pipelines()
    version = version or datetime.now(UTC).strftime("vlpeft-%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="vlpeft-kfp-") as tmp:
        pkg = _package(pc, package, params, sets, image, tmp)
        result = pc.upload(pkg, host=host, token=_token(pc, token_file), name=name, version=version,
                           namespace=namespace, description=description, timeout=timeout)  # fmt: skip
    typer.echo(f"pipeline {name} ({result['pipeline_id']}) version {version} ({result['version_id']})")


@kfp_app.command("schedule")
def schedule_cmd(
    host: HostOption,
    cron: Annotated[str, typer.Option(help="six fields: second minute hour day month weekday")],
    pipeline: Annotated[str, typer.Option(help="the uploaded pipeline to run")] = "vlpeft",
    version: Annotated[str | None, typer.Option(help="its version (default: the newest)")] = None,
    name: Annotated[str, typer.Option(help="name of the recurring run")] = "vlpeft-recurring",
    experiment: Annotated[str, typer.Option(help="KFP experiment of the runs")] = "vlpeft",
    max_concurrency: Annotated[int, typer.Option(min=1, help="runs of this schedule at once")] = 1,
    namespace: NamespaceOption = None,
    token_file: TokenFileOption = None,
    timeout: TimeoutOption = 30.0,
) -> None:
    """A recurring run of an uploaded pipeline version on a cron schedule."""
    pc = _pipelines()
    result = pc.schedule(host=host, token=_token(pc, token_file), cron=cron, job_name=name,
                         experiment=experiment, pipeline=pipeline, version=version, namespace=namespace,
                         max_concurrency=max_concurrency, timeout=timeout)  # fmt: skip
    typer.echo(f"recurring run {result['recurring_run_id']} of {pipeline} ({result['version_id']}): {cron}")


@kfp_app.command("run-local")
def run_local_cmd(
    root: Annotated[Path, typer.Option(help="directory for the local run's artifacts")] = Path("kfp-local"),
    cache: Annotated[bool, typer.Option(help="reuse outputs of earlier local runs")] = False,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Run the whole pipeline here with kfp.local, each task with only its pod's environment (Secrets from
    this environment's variables of the same names)."""
    cfg = load(params, sets)
    pc = _pipelines()
    pc.run_local(cfg, root / "pipeline_root", root / "workspace", cache=cache)
    typer.echo(f"pipeline finished; artifacts under {root / 'pipeline_root'}")
