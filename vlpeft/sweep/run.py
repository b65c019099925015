"""``run_sweep``: create the study, start and supervise worker processes, write the sweep's outputs.

Three steps, also run apart (Kubeflow runs them as separate tasks): ``prepare_sweep`` (study, queue, MLflow
parent run) -> workers (``supervise`` of local processes, or ``python -m vlpeft.sweep.worker`` anywhere)
-> ``finish_sweep`` (best params, tables, plots, summary; closes the parent run).

Order matters for safe parallelism: the storage schema, the study and its queue of trial slots (and the
MLflow parent run) exist before any worker starts; workers only ever load them.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from vlpeft.config import Params, Task
from vlpeft.errors import ConfigError, TrainingError
from vlpeft.io import ensure_dir, write_json, write_text
from vlpeft.sweep import report
from vlpeft.sweep.space import queue_plan, with_task_rank
from vlpeft.sweep.storage import (
    open_storage,
    prepare_study,
    recover_worker_trials,
    redact,
    resolve_storage,
    study_lock,
    worker_id,
)
from vlpeft.sweep.study import study_direction
from vlpeft.sweep.worker import DEFAULT_TRAIN_FN, STORAGE_ENV, THREAD_ENV, WorkerSpec
from vlpeft.tasks import get_task

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _launch(spec: WorkerSpec, spec_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    # The spec file lands in the (DVC-cached) output dir: it gets the storage URL without its password,
    # and the worker receives the real one through its environment.
    dataclasses.replace(spec, storage=redact(spec.storage)).save(spec_path)
    env = {**os.environ, **{k: str(spec.threads) for k in THREAD_ENV}, STORAGE_ENV: spec.storage}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "vlpeft.sweep.worker", str(spec_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd(),
        )  # fmt: skip


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def supervise(
    study: optuna.Study,
    specs: list[WorkerSpec],
    work_dir: Path,
    max_retry: int,
    poll_seconds: float = 0.5,
    progress: Any = None,
) -> dict[str, Any]:
    """Run one process per spec until all have exited; recover and replace workers that die.

    A worker that exits abnormally has its RUNNING trials failed and retried (``recover_worker_trials``) and,
    while queued trials remain and the deadline has not passed, is replaced (at most ``max_retry`` times
    per worker slot). Returns counts of exits and respawns.
    """
    procs = {
        i: _launch(s, work_dir / f"worker-{i}.json", work_dir / f"worker-{i}.log")
        for i, s in enumerate(specs)
    }
    respawns = {i: 0 for i in procs}
    crashed: list[str] = []
    try:
        _watch(study, specs, procs, respawns, crashed, work_dir, max_retry, poll_seconds, progress)
    finally:  # the supervisor itself failed or was interrupted: do not leave workers behind
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
    return {"crashed": crashed, "respawns": sum(respawns.values())}


def _watch(
    study: optuna.Study,
    specs: list[WorkerSpec],
    procs: dict[int, subprocess.Popen[bytes]],
    respawns: dict[int, int],
    crashed: list[str],
    work_dir: Path,
    max_retry: int,
    poll_seconds: float,
    progress: Any,
) -> None:
    while procs:
        time.sleep(poll_seconds)
        if progress is not None:
            progress(study)
        for i, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del procs[i]
            if code == 0:
                continue
            log = work_dir / f"worker-{i}.log"
            crashed.append(f"worker {i} exit {code}: {_tail(log, 2)}")
            recover_worker_trials(study, worker_id(proc.pid), max_retry)
            deadline = specs[i].deadline
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if waiting and respawns[i] < max_retry and (deadline is None or time.time() < deadline):
                respawns[i] += 1
                procs[i] = _launch(specs[i], work_dir / f"worker-{i}.json", log)


def _cores() -> int:
    """CPU cores this process may use (the affinity mask, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _progress_printer(total: int) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total, desc="sweep trials", unit="trial", leave=True)

    def update(study: optuna.Study) -> None:
        done = sum(1 for t in study.get_trials(deepcopy=False) if t.state in FINISHED)
        bar.update(max(0, done - bar.n))

    update.close = bar.close  # type: ignore[attr-defined]
    return update


@dataclass
class SweepSetup:
    """What ``prepare_sweep`` made: the study's place, one spec per local worker, the MLflow parent run.

    ``specs`` carry the real storage URL (with any password); ``spec_template()`` is the redacted spec that
    may be written to files or handed to other machines (a Kubeflow sweep-worker task).
    """

    task: Task
    study_name: str
    storage_url: str
    queued: int
    out: Path
    specs: list[WorkerSpec]
    uri: str | None = None
    parent: Any = None

    def spec_template(self) -> WorkerSpec:
        """The first worker's spec without the storage password (paths are the preparing machine's)."""
        return dataclasses.replace(self.specs[0], storage=redact(self.storage_url))


def prepare_sweep(
    params: Params,
    task: Task,
    data_root: str | Path,
    features_dir: str | Path,
    out_dir: str | Path,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    train_fn: str = DEFAULT_TRAIN_FN,
    add_trials: int | None = None,
) -> SweepSetup:
    """Sweep step 1: create the study and queue its trial slots, open (or join) the MLflow parent run.

    ``n_trials`` / ``timeout`` / ``workers`` override ``params.sweep``; ``n_trials`` is the study's size (a
    rerun on the same storage tops it up to that, so processes that join a study never add to it).
    ``add_trials`` instead adds that many trial slots to the study, however many it has (Optuna's
    ``study.optimize(n_trials=N)`` on a loaded study; a new study gets N). Workers started afterwards (local
    processes, other nodes, Kubeflow tasks) only load the study. The parent run stays open until
    ``finish_sweep``.
    """
    get_task(task, what="--task")
    params = with_task_rank(params, task)
    sweep = params.sweep
    # An explicit 0 is a value, not "unset": refused below, never replaced by params.sweep.
    n = sweep.n_trials if n_trials is None else n_trials
    if add_trials is not None:
        n = add_trials
    n_workers = sweep.workers if workers is None else workers
    timeout = timeout if timeout is not None else sweep.timeout
    if n < 1 or n_workers < 1 or (timeout is not None and timeout <= 0):
        raise ConfigError(f"sweep: n_trials {n}, workers {n_workers} and timeout {timeout} must be positive")
    if train_fn == DEFAULT_TRAIN_FN:  # the trainer's inputs, checked before any trial or output exists
        from vlpeft.data.images import karpathy_images
        from vlpeft.train.tasks import open_visual_store

        karpathy_images(data_root)
        open_visual_store(params, task, Path(features_dir) if features_dir else None)
    uri = None
    if params.tracking.enabled:
        from vlpeft.tracking.preflight import check_tracking, tracking_uri

        uri = check_tracking(tracking_uri())
    out = ensure_dir(Path(out_dir).resolve())
    storage_url = resolve_storage(sweep.storage, out)
    study_name = sweep.study_name or f"vlpeft-{task}"

    seed = params.task(task).seed
    plan = (
        queue_plan(sweep, n, seed) if add_trials is None else lambda have: queue_plan(sweep, have + n, seed)
    )
    shown = _shown_params(params)
    parent = None
    # Two sweeps started together must not both create the schema, both enqueue the slots or both open a
    # parent run.
    with study_lock(storage_url, study_name):
        storage = open_storage(storage_url, sweep)
        queued = prepare_study(storage, study_name, sweep, task, plan, study_direction(params, task))
        study = optuna.load_study(study_name=study_name, storage=storage)
        if uri is not None:
            from vlpeft.sweep.trial_tracking import open_parent_run

            parent = open_parent_run(shown, task, study, redact(storage_url), uri)

    threads = sweep.threads_per_worker or max(1, _cores() // n_workers)
    deadline = time.time() + timeout if timeout is not None else None
    from vlpeft.config import params_to_dict

    specs = [
        WorkerSpec(
            storage=storage_url,
            study_name=study_name,
            task=task,
            params=params_to_dict(shown),
            data_root=str(Path(data_root).resolve()),
            features_dir=str(Path(features_dir).resolve()),
            out_dir=str(out),
            train_fn=train_fn,
            worker_index=i,
            threads=threads,
            deadline=deadline,
            mlflow_uri=uri,
            mlflow_experiment=params.tracking.experiment,
            parent_run_id=parent.run_id if parent is not None else None,
        )
        for i in range(n_workers)
    ]
    return SweepSetup(task, study_name, storage_url, queued, out, specs, uri, parent)


def _shown_params(params: Params) -> Params:
    """What workers, spec files and MLflow see: the params without the storage password."""
    sweep = params.sweep
    return params.model_copy(
        update={
            "sweep": sweep.model_copy(update={"storage": redact(sweep.storage) if sweep.storage else None})
        }
    )


def finish_sweep(
    params: Params,
    task: Task,
    out_dir: str | Path,
    *,
    setup: SweepSetup | None = None,
    exits: dict[str, Any] | None = None,
    optuna_plots: bool = True,
    failed: bool = False,
) -> dict[str, Any]:
    """Sweep step 3: write the outputs of the finished study, close the parent run; return the summary.

    Without ``setup`` (another process prepared the study: a Kubeflow task), the study is loaded from
    ``params.sweep`` (``$VLPEFT_SWEEP_STORAGE`` wins for the URL with its password) and its MLflow parent run
    is joined by the id kept on the study. ``failed`` only closes the parent run as FAILED.
    A study without any completed trial is a ``TrainingError`` naming the first failure.
    """
    out = Path(out_dir).resolve()
    if setup is None:
        setup = _rejoin(params, task, out)
    storage = open_storage(setup.storage_url, params.sweep)
    study = optuna.load_study(study_name=setup.study_name, storage=storage)
    summary = None
    try:
        if not failed:
            summary = write_outputs(
                study, params, task, out, setup.storage_url, setup.queued,
                exits or {"crashed": [], "respawns": 0}, setup.uri, setup.parent, optuna_plots,
            )  # fmt: skip
    finally:
        if setup.parent is not None:
            from vlpeft.sweep.trial_tracking import close_parent_run

            close_parent_run(setup.parent, failed=failed or summary is None)
    if summary is None:
        return {}
    if summary["best"] is None:
        reasons = [r["fail_reason"] for r in report_records(study) if r.get("fail_reason")]
        why = f"; first failure: {reasons[0]}" if reasons else ""
        logs = out / "workers"
        raise TrainingError(
            f"sweep {setup.study_name}: no trial completed ({summary['states']}){why} (logs: {logs})"
        )
    return summary


def _rejoin(params: Params, task: Task, out: Path) -> SweepSetup:
    """The setup of a study another process prepared: storage, study name, MLflow parent run."""
    sweep = params.sweep
    storage_url = os.environ.get(STORAGE_ENV) or resolve_storage(sweep.storage, out)
    study_name = sweep.study_name or f"vlpeft-{task}"
    parent, uri = None, None
    if params.tracking.enabled:
        from vlpeft.sweep.trial_tracking import PARENT_ATTR, JoinedRun
        from vlpeft.tracking.preflight import check_tracking, tracking_uri

        uri = check_tracking(tracking_uri())
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url, sweep))
        run_id = study.user_attrs.get(PARENT_ATTR)
        parent = JoinedRun(uri, str(run_id)) if run_id else None
    return SweepSetup(task, study_name, storage_url, 0, out, [], uri, parent)


def run_sweep(
    params: Params,
    task: Task,
    data_root: str | Path,
    features_dir: str | Path,
    out_dir: str | Path,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    train_fn: str = DEFAULT_TRAIN_FN,
    poll_seconds: float = 0.5,
    optuna_plots: bool = True,
    add_trials: int | None = None,
) -> dict[str, Any]:
    """Run the sweep of ``task`` on this machine and write its outputs to ``out_dir``; return the summary.

    The three steps Kubeflow runs as separate tasks: ``prepare_sweep`` -> local worker processes
    (``supervise``) -> ``finish_sweep``. ``train_fn`` (``"module:function"``) is the injected train function
    with the "Trainer" contract's signature; ``n_trials`` / ``timeout`` / ``workers`` override
    ``params.sweep``. Outputs: ``best_params.json``, ``table.md``, ``routing_rank.png``,
    ``optimization_history.png``, ``param_importances.png`` (when drawable), ``intermediate_values.png``,
    ``trials.json``, ``trials.csv``, ``summary.json``; worker specs and logs under ``workers/``; they cover
    every trial of the study. ``optuna_plots=False`` skips Optuna's plots. ``add_trials``: see
    ``prepare_sweep``.
    """
    setup = prepare_sweep(
        params, task, data_root, features_dir, out_dir,
        n_trials=n_trials, timeout=timeout, workers=workers, train_fn=train_fn, add_trials=add_trials,
    )  # fmt: skip
    study = optuna.load_study(
        study_name=setup.study_name, storage=open_storage(setup.storage_url, params.sweep)
    )
    progress = _progress_printer(len(study.get_trials(deepcopy=False)))
    try:
        exits = supervise(
            study, setup.specs, setup.out / "workers", params.sweep.max_retry, poll_seconds, progress
        )
    except BaseException:
        finish_sweep(params, task, setup.out, setup=setup, failed=True)
        raise
    finally:
        progress.close()
    return finish_sweep(params, task, setup.out, setup=setup, exits=exits, optuna_plots=optuna_plots)


def report_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of the study as a record (see ``report.trial_record``)."""
    return [report.trial_record(t) for t in study.get_trials(deepcopy=False)]


def write_outputs(
    study: optuna.Study,
    params: Params,
    task: Task,
    out: Path,
    storage_url: str,
    queued: int,
    exits: dict[str, Any],
    uri: str | None = None,
    parent: Any = None,
    optuna_plots: bool = True,
) -> dict[str, Any]:
    """Write every output file of a finished sweep (and log them to the parent run); return the summary."""
    sweep = params.sweep
    trial_dirs = out / "trials"
    if trial_dirs.is_dir() and not any(trial_dirs.iterdir()):
        trial_dirs.rmdir()
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = study.get_trials(deepcopy=False)
    records = report_records(study)
    report.write_records(out, records)
    routings, ranks = list(sweep.routing), list(with_task_rank(params, task).sweep.rank or [])
    title = f"{task}: routing × rank ({study.study_name})"
    write_text(out / "table.md", report.table_markdown(records, routings, ranks, title, maximize))
    report.write_heatmap(out / "routing_rank.png", records, routings, ranks, title, maximize)
    plots, skipped = report.write_optuna_plots(study, out) if optuna_plots else ([], {"all": "not asked for"})
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    if best is not None:
        write_json(out / "best_params.json", report.best_params(task, best))
    states = {
        s.name: sum(1 for t in trials if t.state == s)
        for s in TrialState
        if any(t.state == s for t in trials)
    }
    closed = 0
    if uri is not None:
        from vlpeft.sweep.trial_tracking import close_orphan_runs

        closed = close_orphan_runs(uri, trials)
    summary = {
        "task": task,
        "study_name": study.study_name,
        "storage": redact(storage_url),
        "direction": "maximize" if maximize else "minimize",
        "queued_now": queued,
        "trials": len(trials),
        "states": states,
        "best": None if best is None else report.trial_record(best),
        "best_params": None if best is None else report.best_params(task, best),
        "plots": ["routing_rank.png", *plots],
        "plots_skipped": skipped,
        "workers": exits,
        "mlflow_parent_run_id": getattr(parent, "run_id", None),
        "mlflow_orphan_runs_closed": closed,
    }
    write_json(out / "summary.json", summary)
    if parent is not None:
        if best is not None:
            parent.log_metrics({"best_value": float(best.value), "best_trial": float(best.number)})
        parent.log_metrics({f"trials_{k.lower()}": float(v) for k, v in states.items()})
        parent.set_tags({"best_trial": str(best.number) if best else "none"})
        for name in (
            "best_params.json",
            "table.md",
            "trials.json",
            "trials.csv",
            "summary.json",
            *summary["plots"],
        ):
            if (out / name).exists():
                parent.log_artifact(out / name, "sweep")
    return summary
