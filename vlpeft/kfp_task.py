"""What a Kubeflow component does around its stage function (no Kubeflow import: it runs in any process).

A component receives the run's resolved params as YAML text, the KFP run id and task name (placeholders the
pipeline fills in), and its artifacts' URIs. ``open_task`` parses and validates the params, refuses a
cluster task that would track or sweep into pod-local files, and exports the provenance that
``vlpeft.tracking.provenance.KfpProvenance`` puts on every MLflow run and registered version.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlpeft.config import Params, params_from_dict
from vlpeft.errors import ConfigError
from vlpeft.tracking.provenance import IMAGE_ENV, KFP_INPUTS_ENV, KFP_OUTPUTS_ENV, KFP_RUN_ENV, KFP_TASK_ENV

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"  # set in every Kubernetes pod


def parse_params(params_yaml: str, source: str = "pipeline parameter params_yaml") -> Params:
    """The run's params from the YAML text a component receives, validated (one-line ``ConfigError``)."""
    from vlpeft.config import load_yaml

    data = load_yaml(params_yaml, source) or {}  # the strict loader: no alias bombs, duplicate keys...
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    return params_from_dict(data, source)


def open_task(
    params_yaml: str,
    *,
    run_id: str,
    task_name: str,
    image: str,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    needs_sweep_storage: bool = False,
) -> Params:
    """Validate the run's params and export this task's provenance; return the params.

    In a pod (``$KUBERNETES_SERVICE_HOST`` set), tracking without ``$MLFLOW_TRACKING_URI`` (the MLflow
    Secret) and a sweep without a shared study storage (the Optuna Secret) are refused: both would write
    to pod-local files that vanish with the pod.
    """
    params = parse_params(params_yaml)
    os.environ[KFP_RUN_ENV] = run_id
    os.environ[KFP_TASK_ENV] = task_name
    os.environ[IMAGE_ENV] = image
    os.environ[KFP_INPUTS_ENV] = json.dumps(dict(inputs or {}), sort_keys=True)
    os.environ[KFP_OUTPUTS_ENV] = json.dumps(dict(outputs or {}), sort_keys=True)
    if os.environ.get(IN_CLUSTER_ENV):
        if params.tracking.enabled and not os.environ.get("MLFLOW_TRACKING_URI"):
            raise ConfigError(
                f"task {task_name}: tracking.enabled but MLFLOW_TRACKING_URI is not set "
                f"(create the Secret named by kfp.mlflow_secret, key tracking_uri)"
            )
        from vlpeft.sweep.worker import STORAGE_ENV

        if needs_sweep_storage and not (os.environ.get(STORAGE_ENV) or params.sweep.storage):
            raise ConfigError(
                f"task {task_name}: no shared Optuna storage: {STORAGE_ENV} is not set "
                f"(create the Secret named by kfp.optuna_secret, key url)"
            )
    return params


def with_sweep_storage(params: Params) -> Params:
    """``params`` with ``sweep.storage`` = ``$VLPEFT_SWEEP_STORAGE`` (the Optuna Secret) when that is set.

    The URL's password stays out of every file and MLflow run (the sweep redacts it).
    """
    from vlpeft.sweep.worker import STORAGE_ENV

    url = os.environ.get(STORAGE_ENV)
    if not url:
        return params
    return params.model_copy(update={"sweep": params.sweep.model_copy(update={"storage": url})})


def write_params(params_yaml: str, directory: str | Path) -> Path:
    """The run's params YAML as a file (for a command run in a child process, e.g. ``torchrun``)."""
    path = Path(directory) / "params.yaml"
    path.write_text(params_yaml)
    return path


def copy_tree(src: str | Path, dest: str | Path, skip: tuple[str, ...] = ()) -> Path:
    """Copy ``src`` into ``dest`` (created), leaving out entries named in ``skip`` (e.g. optimizer state)."""
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*skip) if skip else None)
    return Path(dest)


def log_numeric(metrics: Any, figures: Mapping[str, Any]) -> None:
    """Log the numbers of a flat ``figures`` dict to a KFP ``Metrics`` artifact (the UI shows them).

    Text, booleans and nulls are left out: ``Metrics.log_metric`` takes floats.
    """
    for key, value in figures.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
