"""The ``sweep`` stage: Optuna over rank x routing type (prepare -> workers -> finish, or all three here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlpeft.config import Params
from vlpeft.io import check_writable
from vlpeft.stages.common import check_task, localize_backbones
from vlpeft.stages.declare import StageDecl
from vlpeft.sweep.space import TRIAL_OVERRIDES
from vlpeft.sweep.worker import DEFAULT_TRAIN_FN, WORKER_MODULE

# Every trial trains a full copy of the task's section ({task}) with the trial's values (TRIAL_OVERRIDES,
# beside the search space), in worker processes (WORKER_MODULE) that call DEFAULT_TRAIN_FN. Not read:
# `tracking` (where the trials' MLflow runs go, not what they compute), `seed` (the world's, pretraining's).
STAGE = StageDecl(
    name="sweep",
    functions=("sweep_prepare", "sweep_worker", "sweep_finish", "sweep"),
    module=__name__,
    cli="vlpeft.cli.sweep",
    reads=("data", "model", "features.pooling", "evaluate", "sweep", "{task}"),
    # sweep.tasks is the list of sweep stages (dvc.yaml's foreach), not something one sweep reads.
    ignores=(*(f"{{task}}.{key}" for key in TRIAL_OVERRIDES), "sweep.tasks"),
    entry=(WORKER_MODULE, DEFAULT_TRAIN_FN),
    dispatch=("tasks", "methods"),
)


def sweep_prepare(
    params: Params,
    task: str,
    *,
    data: str | Path,
    features: str | Path,
    out: str | Path,
    models: str | Path | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
) -> Any:
    """Sweep step 1: create the study and queue its trial slots (and the MLflow parent run).

    Returns a ``vlpeft.sweep.run.SweepSetup`` whose worker specs (``setup.specs``) the workers run; its
    ``spec_template()`` is what a Kubeflow sweep-worker task receives.
    """
    check_writable(out)
    from vlpeft.sweep.run import prepare_sweep

    return prepare_sweep(
        localize_backbones(params, models), check_task(task), data, features, out,
        n_trials=n_trials, timeout=timeout, workers=workers,
    )  # fmt: skip


def sweep_worker(
    spec: str | Path | Any,
    *,
    data: str | Path,
    features: str | Path,
    out: str | Path,
    models: str | Path | None = None,
    worker_index: int = 0,
) -> int:
    """Sweep step 2: one worker runs queued trials of the study in ``spec`` (a ``WorkerSpec`` or its JSON).

    The paths are this worker's own (they differ per pod); the storage URL with its password comes from
    ``$VLPEFT_SWEEP_STORAGE`` when set. Returns the number of trials this worker ran.
    """
    import dataclasses

    from vlpeft.config import params_from_dict, params_to_dict
    from vlpeft.sweep.worker import WorkerSpec, run_worker

    base = spec if isinstance(spec, WorkerSpec) else WorkerSpec.load(spec)
    params = localize_backbones(params_from_dict(base.params, "sweep worker spec"), models)
    mine = dataclasses.replace(
        base,
        params=params_to_dict(params),
        data_root=str(Path(data).resolve()),
        features_dir=str(Path(features).resolve()),
        out_dir=str(Path(out).resolve()),
        worker_index=worker_index,
    )
    return run_worker(mine)


def sweep_finish(params: Params, task: str, *, out: str | Path, setup: Any = None) -> dict[str, Any]:
    """Sweep step 3: best params, tables, plots and the summary of the finished study, written to ``out``.

    ``setup`` is the ``sweep_prepare`` result when the same process prepared the study (locally); without
    it the study and its MLflow parent run are found again from ``params`` (a separate Kubeflow task).
    """
    from vlpeft.sweep.run import finish_sweep

    return finish_sweep(params, check_task(task), out, setup=setup)


def sweep(
    params: Params,
    task: str,
    *,
    data: str | Path,
    features: str | Path,
    out: str | Path,
    models: str | Path | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    add_trials: int | None = None,
) -> dict[str, Any]:
    """The whole sweep on this machine: prepare -> local worker processes -> finish (``vlpeft sweep``).

    ``add_trials`` adds that many trials to the study (an existing one is extended, as Optuna users expect);
    without it the study is topped up to ``n_trials`` (default ``sweep.n_trials``).
    """
    check_writable(out)
    from vlpeft.sweep.run import run_sweep

    return run_sweep(
        localize_backbones(params, models), check_task(task), data, features, out,
        n_trials=n_trials, timeout=timeout, workers=workers, add_trials=add_trials,
    )  # fmt: skip
