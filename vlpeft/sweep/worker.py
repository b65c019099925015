"""A sweep worker process: runs queued trials of a study until none is left.

A worker is started by the supervisor (``vlpeft.sweep.run``) with a JSON spec file; the same command can be
run by hand on another machine that reaches the same storage. It limits its torch threads, loads the study
(created beforehand), and runs trials through the injected train function (contract "Trainer":
``train_fn(params, task, data_root, features_dir, out_dir, tracker=None, resume=False, report=None)``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TRAIN_FN = "vlpeft.train.run:train_task"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STORAGE_ENV = "VLPEFT_SWEEP_STORAGE"  # the storage URL with credentials; overrides the spec's (redacted) one


@dataclass
class WorkerSpec:
    """Everything a worker process needs, as plain JSON data."""

    storage: str
    study_name: str
    task: str
    params: dict[str, Any]
    data_root: str
    features_dir: str
    out_dir: str
    train_fn: str = DEFAULT_TRAIN_FN
    worker_index: int = 0
    threads: int = 1
    deadline: float | None = None  # unix time after which no new trial starts
    poll_seconds: float = 1.0
    mlflow_uri: str | None = None  # None = tracking off
    mlflow_experiment: str = "vlpeft"
    parent_run_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON (atomically)."""
        from vlpeft.io import write_json

        write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> WorkerSpec:
        """Read a spec written by ``save``."""
        from vlpeft.io import read_json

        return cls(**read_json(path, "sweep worker spec"))


def resolve_callable(ref: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (how the train function is injected)."""
    from vlpeft.errors import ConfigError

    module, _, name = ref.partition(":")
    if not module or not name:
        raise ConfigError(f"train function {ref!r}: expected 'module:function'")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"train function {ref!r}: cannot import ({exc})") from None
    return obj


def limit_threads(n: int) -> None:
    """Cap BLAS/OpenMP and torch threads of this process (workers must not oversubscribe the cores)."""
    for key in THREAD_ENV:
        os.environ[key] = str(n)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)


def _optional_kwargs(fn: Callable[..., Any], **wanted: Any) -> dict[str, Any]:
    """The subset of ``wanted`` keyword arguments that ``fn`` accepts.

    Trials must not score the test split (model selection looks at validation only) nor draw progress
    bars into worker logs; the trainer offers ``evaluate_test`` / ``progress`` for that, a custom train
    function need not.
    """
    try:
        accepted = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return wanted
    return {k: v for k, v in wanted.items() if k in accepted}


def _objective(spec: WorkerSpec, train: Callable[..., Any]) -> Callable[[Any], float]:
    import optuna

    from vlpeft.config import params_from_dict
    from vlpeft.errors import TrainingError
    from vlpeft.sweep.space import suggest, trial_params
    from vlpeft.sweep.storage import WORKER_ATTR, worker_id
    from vlpeft.sweep.study import study_direction
    from vlpeft.sweep.trial_tracking import trial_tracker

    params = params_from_dict(spec.params, "sweep worker spec")
    sweep = params.sweep
    better = max if study_direction(params, spec.task) == "maximize" else min
    extra = _optional_kwargs(train, evaluate_test=False, progress=False)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, sweep)
        seed = int(trial.user_attrs.get("seed", params.task(spec.task).seed))  # type: ignore[arg-type]
        if sweep.sampler != "grid":
            # TPE / random may propose a point again: train it with a new seed, so that a repeated cell
            # measures seed variance (mean ± std in the table) instead of re-running the same training.
            seed += sum(1 for t in trial.study.get_trials(deepcopy=False)
                        if t.number != trial.number and t.user_attrs.get("values") == values)  # fmt: skip
            trial.set_user_attr("seed", seed)
        trial.set_user_attr(WORKER_ATTR, worker_id())
        trial.set_user_attr("values", values)
        run_params = trial_params(params, spec.task, values, seed)  # type: ignore[arg-type]
        trial_dir = Path(spec.out_dir) / "trials" / f"trial-{trial.number:04d}"
        scores: list[float] = []
        epochs = run_params.task(spec.task).epochs  # type: ignore[arg-type]
        with trial_tracker(spec, trial, run_params, values) as tracker:

            def report(epoch: int, value: float) -> None:
                scores.append(float(value))
                trial.report(float(value), int(epoch))
                tracker.log_metrics({"sweep_value": float(value)}, step=int(epoch))
                # The last epoch's value is the trial's result: pruning it would only discard finished work.
                if len(scores) < epochs and trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch}: {float(value):.4g} worse than the median")

            try:
                result = train(
                    run_params, spec.task, spec.data_root, spec.features_dir, trial_dir,
                    tracker=tracker, resume=False, report=report, **extra,
                )  # fmt: skip
            except optuna.TrialPruned:
                raise
            except Exception as exc:  # kept on the trial: the report names why trials failed
                trial.set_user_attr("error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                raise
            finally:
                if not sweep.keep_trial_dirs:
                    from vlpeft.io import remove_output

                    remove_output(trial_dir)  # with its unfinished build (a pruned trial) and lock file
            if not scores:
                raise TrainingError(f"trial {trial.number}: the train function reported no validation value")
            metrics = {k: float(v) for k, v in (result or {}).items() if isinstance(v, int | float)}
            trial.set_user_attr("metrics", metrics)
            return better(scores)

    return objective


def run_worker(spec: WorkerSpec) -> int:
    """Run queued trials of ``spec.study_name`` until the queue is empty or the deadline passes.

    With heartbeat storage, a worker whose queue is empty waits while other workers' trials are still
    running: if one of them dies, its trial becomes stale, is retried, and this worker runs the retry.
    Returns the number of trials this worker ran.
    """
    limit_threads(spec.threads)
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    from vlpeft.config import params_from_dict
    from vlpeft.sweep.storage import QueueEmpty, open_storage
    from vlpeft.sweep.study import make_pruner, make_sampler

    os.environ.update(spec.env)
    params = params_from_dict(spec.params, "sweep worker spec")
    train = resolve_callable(spec.train_fn)
    limit_threads(spec.threads)  # again: the train function's module may have imported torch
    storage = open_storage(os.environ.get(STORAGE_ENV) or spec.storage, params.sweep, queue_only=True)
    study = optuna.load_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=make_sampler(params.sweep, spec.worker_index),
        pruner=make_pruner(params.sweep),
    )
    heartbeat = is_heartbeat_enabled(storage)
    objective = _objective(spec, train)
    counter = _Counter()
    while True:
        remaining = None if spec.deadline is None else spec.deadline - time.time()
        if remaining is not None and remaining <= 0:
            break
        try:
            study.optimize(objective, timeout=remaining, catch=(Exception,), callbacks=[counter])
            break  # optimize returns only at the deadline
        except QueueEmpty:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not heartbeat or not running:
                break
            time.sleep(spec.poll_seconds)
            with warnings.catch_warnings():  # "experimental" since Optuna 2.9, the documented way
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(study)  # a dead worker's trial becomes FAIL + a queued retry
    return counter.n


class _Counter:
    """Optuna callback counting the trials this worker finished."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, study: Any, trial: Any) -> None:
        self.n += 1
        if "slot" not in trial.user_attrs and "failed_trial" not in trial.system_attrs:
            # Never expected (workers only pop queued slots); stop rather than run an unbounded study.
            print(f"trial {trial.number} was not a queued slot: stopping this worker", file=sys.stderr)
            study.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m vlpeft.sweep.worker SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vlpeft.sweep.worker SPEC.json", file=sys.stderr)
        return 2
    from vlpeft.errors import UserError

    try:
        spec = WorkerSpec.load(args[0])
        n = run_worker(spec)
    except UserError as exc:
        from vlpeft.redact import redact_text

        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"worker": spec.worker_index, "trials": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
