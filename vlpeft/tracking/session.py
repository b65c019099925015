"""The one place the CLI turns ``params.tracking`` into a tracker for a stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlpeft.tracking.base import NullTracker

AUTO = "auto"
LOCAL_LOG_DIR = Path(".vlpeft") / "tracking"

if TYPE_CHECKING:
    from vlpeft.config import Params
    from vlpeft.tracking.mlflow import MlflowTracker


def open_tracker(
    params: Params,
    stage: str,
    *,
    run_name: str | None = None,
    local_log: str | Path | None = AUTO,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> MlflowTracker | NullTracker:
    """A tracker for one stage execution, to be used as ``with open_tracker(params, "train@vqa") as t:``.

    ``tracking.enabled: false`` gives a ``NullTracker``. Otherwise an ``MlflowTracker`` on
    ``$MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db`` at the project root) whose ``__enter__``
    checks the tracking store first, so an unreachable server is a ``TrackingError`` before any training.
    The params sections the stage reads (``vlpeft.tracking.names.stage_params``) are logged as flattened
    params and as an artifact; the run name is unique (``<stage or DVC stage>-<8 hex>``).

    Every call is also appended to a local JSON-lines log first (``local_log``; by default
    ``<project root>/.vlpeft/tracking/<stage>-<UTC time>-<pid>.jsonl``, None for none), so a tracking server
    that dies mid-run loses nothing: ``vlpeft.tracking.mlflow.replay_local_log`` sends it later.
    """
    if not params.tracking.enabled:
        return NullTracker()
    from vlpeft.config import params_to_dict
    from vlpeft.tracking.mlflow import MlflowTracker
    from vlpeft.tracking.names import stage_params

    if local_log == AUTO:
        import os
        import time

        from vlpeft.tracking.preflight import project_root

        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        local_log = project_root() / LOCAL_LOG_DIR / f"{stage}-{stamp}-{os.getpid()}.jsonl"
    return MlflowTracker(
        stage,
        config=stage_params(params_to_dict(params), stage),
        experiment=params.tracking.experiment,
        run_name=run_name,
        local_log=local_log,
        parent_run_id=parent_run_id,
        tags=tags,
    )
