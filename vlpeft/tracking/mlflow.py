"""``MlflowTracker``: one MLflow run per stage execution, used as a context manager.

Every call is first appended to a local JSON-lines log (when one is given), then sent to MLflow. If the
tracking server goes away in the middle of a run, the run goes on: one warning, the local log keeps
everything, and ``replay_local_log`` can send it later.
"""

from __future__ import annotations

import json
import re
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from vlpeft.errors import TrackingError
from vlpeft.io import is_disk_full
from vlpeft.redact import redact, redact_text, redacted_output
from vlpeft.tracking.preflight import (
    call_timeout,
    check_tracking,
    quiet_mlflow_env,
    sqlite_artifact_root,
    tracking_uri,
)
from vlpeft.tracking.provenance import provenance_tags

MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000
MAX_KEY = 250
BATCH = 100  # params/tags per log_batch call (MLflow's limit)
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def clean_key(key: str) -> str:
    """A metric/param/tag key MLflow accepts: disallowed characters become ``_``, at most 250 characters."""
    key = _BAD_KEY_CHARS.sub("_", str(key)).strip("/") or "_"
    return key[:MAX_KEY]


def clean_params(params: dict[str, Any]) -> dict[str, str]:
    """Flatten nested dicts (``a.b``) and cut values to MLflow's 6000-character limit (marked with ``…``)."""
    from vlpeft.config import flatten

    out: dict[str, str] = {}
    for key, value in flatten(params).items():
        text = redact_text(str(value))
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - 1] + "…"
        out[clean_key(key)] = text
    return out


def get_or_create_experiment(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created on first use (artifacts beside a sqlite store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    root = sqlite_artifact_root(uri)
    location = Path(root, clean_key(name)).as_uri() if root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created by a concurrent process (sweep workers) in the meantime
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class MlflowTracker:
    """A ``Tracker`` writing to one MLflow run, opened on ``__enter__`` and closed on ``__exit__``.

    Args:
        stage: pipeline stage name (``train@vqa``); becomes the ``stage`` tag and the default run name.
        config: the resolved config as plain data; logged flattened as params and as ``config/params.yaml``.
        experiment: MLflow experiment name (created on first use).
        uri: tracking URI; default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<project root>/mlflow.db``.
        local_log: JSON-lines file every call is appended to before it goes to MLflow.
        parent_run_id: makes this a nested run (a sweep trial under its study run).
        tags: extra tags; provenance tags (git commit, dirty flag, DVC data hash, stage) are added.
        cwd: project directory for git and ``dvc.lock`` (default: the project root above the current dir).
    """

    def __init__(
        self,
        stage: str,
        *,
        config: dict[str, Any] | None = None,
        experiment: str = "vlpeft",
        uri: str | None = None,
        run_name: str | None = None,
        local_log: str | Path | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.stage = stage
        self.config = config
        self.experiment = experiment
        self.uri = uri or tracking_uri(cwd or ".")
        self.run_name = run_name or stage
        self.local_log = Path(local_log) if local_log else None
        self.parent_run_id = parent_run_id
        self.extra_tags = dict(tags or {})
        self.cwd = Path(cwd) if cwd is not None else None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client: Any = None
        self._broken = False
        self._local_broken = False
        self.call_timeout = call_timeout()

    # ------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> MlflowTracker:
        quiet_mlflow_env()
        check_tracking(self.uri)
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.uri)
        try:
            self.experiment_id = get_or_create_experiment(self._client, self.experiment, self.uri)
            tags = {**provenance_tags(self.stage, self.cwd), **self.extra_tags}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = self._client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        except Exception as exc:
            raise TrackingError(f"tracking URI {self.uri}: cannot start a run ({exc})") from None
        self.run_id = run.info.run_id
        self._local("start", {"run_id": self.run_id, "experiment": self.experiment, "tags": tags})
        if self.config is not None:
            self.log_params(self.config)
            self.log_text(_yaml(redact(self.config)), "config/params.yaml")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        status = "FINISHED" if exc_type is None else "KILLED" if exc_type is KeyboardInterrupt else "FAILED"
        self._local("end", {"status": status})
        with redacted_output():  # MLflow prints "View run ... at <tracking URI>" here
            self._remote(lambda: self._client.set_terminated(self.run_id, status=status))

    # -------------------------------------------------------------------------------- Tracker protocol

    def log_params(self, params: dict[str, Any]) -> None:
        """Log (nested) params, flattened to dotted keys; values longer than MLflow allows are cut."""
        from mlflow.entities import Param

        flat = clean_params(params)
        self._local("params", flat)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), BATCH):
            chunk = items[i : i + BATCH]
            self._remote(lambda chunk=chunk: self._client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log scalar metrics at ``step`` (0 when None); keys are made MLflow-safe (``yes/no`` is fine)."""
        from mlflow.entities import Metric

        values = {clean_key(k): float(v) for k, v in metrics.items()}
        self._local("metrics", values, step=step)
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, int(step or 0)) for k, v in values.items()]
        self._remote(lambda: self._client.log_batch(self.run_id, metrics=items))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a whole directory (e.g. adapter weights) under ``artifact_path``."""
        path = Path(path)
        if not path.exists():
            raise TrackingError(f"{path}: artifact to log does not exist")
        self._local("artifact", {"path": str(path), "artifact_path": artifact_path})
        if path.is_dir():
            dest = artifact_path if artifact_path is not None else path.name
            self._remote(lambda: self._client.log_artifacts(self.run_id, str(path), dest))
        else:
            self._remote(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags (values cut to MLflow's limit)."""
        from mlflow.entities import RunTag

        clean = {clean_key(k): redact_text(str(v))[:MAX_TAG_VALUE] for k, v in tags.items()}
        self._local("tags", clean)
        items = [RunTag(k, v) for k, v in clean.items()]
        for i in range(0, len(items), BATCH):
            chunk = items[i : i + BATCH]
            self._remote(lambda chunk=chunk: self._client.log_batch(self.run_id, tags=chunk))

    # ---------------------------------------------------------------------------------------- extras

    def end_stale_run(self, run_id: str) -> None:
        """End run ``run_id`` as ``KILLED`` if it is still ``RUNNING`` (a killed process cannot end its own
        run) and link it with this one (tags ``resumed_by`` / ``resumed_from``); called on resume."""
        self.set_tags({"resumed_from": run_id})
        self._local("end_stale", {"run_id": run_id})

        def end() -> None:
            try:
                status = self._client.get_run(run_id).info.status
            except Exception:  # e.g. the checkpoint was made with another tracking store: nothing to end
                return
            if status == "RUNNING":
                self._client.set_tag(run_id, "resumed_by", str(self.run_id))
                self._client.set_terminated(run_id, status="KILLED")

        self._remote(end)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file (e.g. a rendered report)."""
        self._local("text", {"artifact_file": artifact_file, "chars": len(text)})
        self._remote(lambda: self._client.log_text(self.run_id, text, artifact_file))

    @property
    def healthy(self) -> bool:
        """False once a call to MLflow failed during this run (the local log still has everything)."""
        return not self._broken

    # -------------------------------------------------------------------------------------- internal

    def _local(self, kind: str, data: dict[str, Any], step: int | None = None) -> None:
        """Append one record to the local log. A log that cannot be written (disk full, permissions) costs
        one warning and the log, never the run: tracking is a record of the work, not the work."""
        if self.local_log is None or self._local_broken:
            return
        record = {"kind": kind, "time": time.time(), "step": step, "data": redact(data)}
        try:
            self.local_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.local_log, "a") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        except OSError as exc:
            self._local_broken = True
            reason = "no space left on device" if is_disk_full(exc) else (exc.strerror or str(exc))
            warnings.warn(
                f"{self.local_log}: {reason}; the local tracking log stops here (MLflow goes on)",
                RuntimeWarning,
                stacklevel=3,
            )

    def _remote(self, call: Any) -> None:
        """Run one MLflow call; a failure, or no answer within ``call_timeout`` seconds (a frozen server),
        costs one warning, then the run goes on with the local log only."""
        if self._broken or self.run_id is None:
            return
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                call()
                outcome.append(None)
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)

        worker = threading.Thread(target=attempt, name="mlflow-call", daemon=True)
        worker.start()
        worker.join(self.call_timeout)
        if not outcome:
            problem = f"no answer within {self.call_timeout:g} s"
        elif outcome[0] is not None:
            problem = str(outcome[0])
        else:
            return
        self._broken = True
        where = f"; the local log {self.local_log} has everything" if self.local_log else ""
        text = f"tracking URI {self.uri}: logging failed, continuing without MLflow ({problem}){where}"
        warnings.warn(
            redact_text(text),
            RuntimeWarning,
            stacklevel=3,
        )


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def replay_local_log(local_log: str | Path, *, experiment: str = "vlpeft", uri: str | None = None) -> str:
    """Send a run recorded in ``local_log`` (written while the server was down) to MLflow as a new run.

    Returns the new run id. Artifacts are re-uploaded from their recorded paths when those still exist; a
    param recorded twice keeps its last value.
    """
    lines = Path(local_log).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    start = next((r for r in records if r["kind"] == "start"), None)
    tags = dict(start["data"].get("tags", {})) if start else {}
    stage = tags.get("stage", "replayed")
    tracker = MlflowTracker(
        stage, experiment=experiment, uri=uri, tags={**tags, "replayed_from": str(local_log)}
    )
    params: dict[str, str] = {}
    for rec in records:  # MLflow params are write-once: the last value recorded wins
        if rec["kind"] == "params":
            params.update(rec["data"])
    with tracker:
        tracker.log_params(params)
        for rec in records:
            kind, data = rec["kind"], rec["data"]
            if kind == "metrics":
                tracker.log_metrics(data, step=rec.get("step"))
            elif kind == "tags":
                tracker.set_tags(data)
            elif kind == "artifact" and Path(data["path"]).exists():
                tracker.log_artifact(data["path"], data.get("artifact_path"))
    assert tracker.run_id is not None
    return tracker.run_id
