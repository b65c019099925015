"""Compile the pipeline to YAML, submit a compiled package to a KFP API server, run it with ``kfp.local``.

``vlpeft kfp compile|submit|run-local`` (``vlpeft/cli/kfp.py``) call these; params are validated before
anything compiles, so a bad value is one error line.
"""

import json
import os
from pathlib import Path

SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # kfp.Client's in-cluster token (projected)
TOKEN_ENV = "KF_PIPELINES_TOKEN"


def params_yaml_text(params) -> str:
    """The resolved params as the text every task receives: YAML in its one-line (JSON) form, since the
    compiler copies a parameter's default into a ``#`` comment header that a multi-line value would break.
    A sweep storage URL with a password is refused (it would land in the compiled YAML)."""
    from vlpeft.config import params_to_dict
    from vlpeft.errors import ConfigError
    from vlpeft.sweep.storage import redact

    storage = params.sweep.storage
    if storage and redact(storage) != storage:
        raise ConfigError(
            "sweep.storage: has a password, which would land in the compiled pipeline: leave sweep.storage "
            "unset and put the URL in the Secret named by kfp.optuna_secret (key url)"
        )
    return json.dumps(params_to_dict(params), sort_keys=True)


def compile_pipeline(params, out: str | Path, image: str | None = None) -> Path:
    """Write the pipeline of ``params`` (every task in ``image``, default ``kfp.image``) to ``out``."""
    from kfp import compiler

    from pipelines.vlpeft_pipeline import build_pipeline
    from vlpeft.io import atomic_path

    pipeline = build_pipeline(params, params_yaml_text(params), image)
    with atomic_path(out) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return Path(out)


def disable_caching(package: dict) -> dict:
    """The pipeline spec with caching off for every task of every DAG (root and nested, e.g. ParallelFor
    bodies): ``kfp.Client(enable_caching=False)`` only rewrites the root DAG's tasks."""
    dags = [package.get("root", {}).get("dag", {})]
    dags += [c.get("dag", {}) for c in package.get("components", {}).values()]
    for dag in dags:
        for task in (dag.get("tasks") or {}).values():
            task["cachingOptions"] = {"enableCache": False}
    return package


def read_token(token_file: str | None = None) -> str | None:
    """The bearer token: ``$KF_PIPELINES_TOKEN``, else the file given, else the in-cluster SA token file."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    for path in (token_file, SA_TOKEN_PATH):
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
    return None


def submit(
    package: str | Path,
    *,
    host: str,
    token: str | None,
    experiment: str,
    namespace: str | None = None,
    run_name: str | None = None,
    no_cache: bool = False,
    wait: float | None = None,
) -> dict:
    """Create a run of the compiled ``package`` on the KFP API server at ``host``; returns its id and state.

    ``no_cache`` turns caching off in every DAG; ``wait`` (seconds) polls until the run finishes.
    API errors (unreachable host, 401/403/404) become a one-line ``TrackingError``.
    """
    import tempfile

    import kfp
    import yaml

    from vlpeft.errors import TrackingError

    docs = list(yaml.safe_load_all(Path(package).read_text()))
    if no_cache:
        docs[0] = disable_caching(docs[0])
    with tempfile.TemporaryDirectory(prefix="vlpeft-kfp-") as tmp:
        pkg = Path(tmp) / "pipeline.yaml"
        pkg.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        try:
            client = kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")
            result = client.create_run_from_pipeline_package(
                str(pkg), arguments={}, run_name=run_name, experiment_name=experiment, namespace=namespace
            )
            state = None
            if wait:
                state = client.wait_for_run_completion(result.run_id, timeout=wait).state
        except Exception as exc:  # kfp_server_api.ApiException, urllib3/requests errors, timeouts
            reason = getattr(exc, "reason", None) or " ".join(str(exc).split())[:200]
            status = getattr(exc, "status", None)
            raise TrackingError(f"KFP API {host}: {f'HTTP {status} ' if status else ''}{reason}") from None
    return {
        "run_id": result.run_id,
        "state": state,
        "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}",
    }


def run_local(params, pipeline_root: str | Path, workspace_root: str | Path, cache: bool = False) -> dict:
    """Run the whole pipeline with ``kfp.local`` (``SubprocessRunner``: every task in this Python, which
    must have vlpeft installed); returns ``{task name: {output name: path or value}}``."""
    from kfp import local

    from pipelines.vlpeft_pipeline import build_pipeline

    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    Path(workspace_root).mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               workspace_root=str(workspace_root), enable_caching=cache)  # fmt: skip
    pipeline = build_pipeline(params, params_yaml_text(params))
    result = pipeline()
    outputs = getattr(result, "outputs", {}) or {}
    return {k: getattr(v, "path", v) for k, v in outputs.items()} if isinstance(outputs, dict) else {}


def dumps(data) -> str:
    """JSON for the CLI's last line."""
    return json.dumps(data, default=str)
