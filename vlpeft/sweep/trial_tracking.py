"""MLflow runs of a sweep: one parent run per study, one nested run per trial (our own code).

The optuna-integration ``MLflowCallback`` is deprecated and does not nest trials under a parent run across
processes; here the supervisor opens the parent run and passes its id to every worker explicitly, and each
worker opens the trial's nested run itself (tags ``mlflow.parentRunId``, ``optuna.trial_number``, ``state``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vlpeft.tracking.base import NullTracker

if TYPE_CHECKING:
    from vlpeft.config import Params
    from vlpeft.sweep.worker import WorkerSpec


@contextlib.contextmanager
def trial_tracker(spec: WorkerSpec, trial: Any, params: Params, values: dict[str, Any]) -> Iterator[Any]:
    """A tracker on the trial's nested run (a ``NullTracker`` when tracking is off).

    The run ends FINISHED for COMPLETE and PRUNED trials and FAILED otherwise; its ``state`` tag carries the
    Optuna state. The run id is kept on the trial (user attr ``mlflow_run_id``) so that the supervisor can
    close runs of workers that died.
    """
    import optuna

    if spec.mlflow_uri is None:
        yield NullTracker()
        return
    from vlpeft.config import params_to_dict
    from vlpeft.tracking.mlflow import MlflowTracker

    tags = {
        "optuna.study_name": spec.study_name,
        "optuna.trial_number": str(trial.number),
        "sweep.task": spec.task,
        "state": "RUNNING",
        **{f"sweep.{k}": str(v) for k, v in values.items()},
    }
    tracker = MlflowTracker(
        f"sweep@{spec.task}",
        config=params_to_dict(params),
        experiment=spec.mlflow_experiment,
        uri=spec.mlflow_uri,
        run_name=f"{spec.study_name}-trial-{trial.number}",
        parent_run_id=spec.parent_run_id,
        tags=tags,
    )
    pruned: optuna.TrialPruned | None = None
    with tracker:
        trial.set_user_attr("mlflow_run_id", tracker.run_id)
        tracker.log_params({"trial": {"number": trial.number, **values}})
        try:
            yield tracker
        except optuna.TrialPruned as exc:
            tracker.set_tags({"state": "PRUNED"})
            pruned = exc
        except BaseException:
            tracker.set_tags({"state": "FAIL"})
            raise
        else:
            tracker.set_tags({"state": "COMPLETE"})
    if pruned is not None:
        raise pruned


PARENT_ATTR = "mlflow_parent_run_id"  # study user attr: the study's parent run, shared by every invocation


class JoinedRun:
    """An existing parent run that this invocation logs to (another node or an earlier run made it)."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step or 0)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from vlpeft.redact import redacted_output

        with redacted_output():  # MLflow prints "View run ... at <tracking URI>" here
            self.client.set_terminated(self.run_id, status="FINISHED" if exc_type is None else "FAILED")


def _existing_run(uri: str, run_id: Any) -> bool:
    from mlflow.tracking import MlflowClient

    try:
        return (
            bool(run_id)
            and MlflowClient(tracking_uri=uri).get_run(str(run_id)).info.lifecycle_stage == "active"
        )
    except Exception:  # another tracking store, or the run was deleted
        return False


def open_parent_run(params: Params, task: str, study: Any, storage: str, uri: str) -> Any:
    """The study's parent run, opened (close it with ``close_parent_run``).

    One parent run per study: its id is kept on the study (user attr ``mlflow_parent_run_id``), so that a
    later invocation (a top-up, or ``vlpeft sweep`` on another node sharing the storage) nests its trials
    under the same run instead of making a new one.
    """
    from vlpeft.config import params_to_dict
    from vlpeft.tracking.mlflow import MlflowTracker

    study_name = study.study_name
    known = study.user_attrs.get(PARENT_ATTR)
    if _existing_run(uri, known):
        return JoinedRun(uri, str(known))

    tracker = MlflowTracker(
        f"sweep@{task}",
        config=params_to_dict(params),
        experiment=params.tracking.experiment,
        uri=uri,
        run_name=study_name,
        tags={"optuna.study_name": study_name, "optuna.storage": storage, "sweep.task": task},
    )
    tracker.__enter__()
    study.set_user_attr(PARENT_ATTR, tracker.run_id)
    return tracker


def close_parent_run(tracker: Any, failed: bool = False) -> None:
    """End the parent run (FINISHED, or FAILED when the sweep failed)."""
    if failed:
        tracker.__exit__(RuntimeError, RuntimeError("sweep failed"), None)
    else:
        tracker.__exit__(None, None, None)


def close_orphan_runs(uri: str, trials: list[Any]) -> int:
    """Mark nested runs of trials whose worker died (still RUNNING in MLflow, FAIL in Optuna) as FAILED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    closed = 0
    for trial in trials:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id or trial.state.name != "FAIL":
            continue
        run = client.get_run(run_id)
        if run.info.status == "RUNNING":
            client.set_tag(run_id, "state", "FAIL")
            client.set_terminated(run_id, status="FAILED")
            closed += 1
    return closed
