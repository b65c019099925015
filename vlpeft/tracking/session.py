"""The one place the CLI turns ``params.tracking`` into a tracker for a stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlpeft.tracking.base import NullTracker

if TYPE_CHECKING:
    from vlpeft.config import Params
    from vlpeft.tracking.mlflow import MlflowTracker


def open_tracker(
    params: Params,
    stage: str,
    *,
    run_name: str | None = None,
    local_log: str | Path | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> MlflowTracker | NullTracker:
    """A tracker for one stage execution, to be used as ``with open_tracker(params, "train@vqa") as t:``.

    ``tracking.enabled: false`` gives a ``NullTracker``. Otherwise an ``MlflowTracker`` on
    ``$MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db`` at the project root) whose ``__enter__``
    checks the tracking store first, so an unreachable server is a ``TrackingError`` before any training.
    The resolved config is logged as flattened params and as an artifact.
    """
    if not params.tracking.enabled:
        return NullTracker()
    from vlpeft.config import params_to_dict
    from vlpeft.tracking.mlflow import MlflowTracker

    return MlflowTracker(
        stage,
        config=params_to_dict(params),
        experiment=params.tracking.experiment,
        run_name=run_name,
        local_log=local_log,
        parent_run_id=parent_run_id,
        tags=tags,
    )
