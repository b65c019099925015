"""Which tracking store to use, and a fast check that it answers before any training starts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from vlpeft.errors import TrackingError

ROOT_MARKERS = ("dvc.yaml", ".dvc", ".git", "params.yaml")
_ENV_DEFAULTS = {
    # Telemetry off: runs must not phone home (and CI has no network beyond package registries).
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # MLflow retries a failing HTTP call 7 times with exponential backoff (minutes). A server that dies in
    # the middle of training should cost one short stall, then the run goes on with the local log.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # MLflow waits 120 s for each answer (x3 with the retries): a frozen server (it accepts connections and
    # never answers) stalled training for 6 minutes. An MLflow call answers in milliseconds when it answers.
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
CALL_TIMEOUT_ENV = "VLPEFT_TRACKING_TIMEOUT"
DEFAULT_CALL_TIMEOUT = 30.0


def call_timeout() -> float:
    """Seconds one tracking call may take before the run gives up on MLflow and goes on with its local log
    (``$VLPEFT_TRACKING_TIMEOUT``, default 30): the bound also holds where no HTTP timeout applies (an
    artifact upload, a locked database, a DNS lookup)."""
    raw = os.environ.get(CALL_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_CALL_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise TrackingError(f"{CALL_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def quiet_mlflow_env() -> None:
    """Set MLflow's environment defaults for this project (telemetry off, few HTTP retries) unless set."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def project_root(start: str | Path = ".") -> Path:
    """``$DVC_ROOT`` under ``dvc repro``; else the nearest directory at or above ``start`` with a dvc.yaml,
    .dvc, .git or params.yaml (else ``start``)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / m).exists() for m in ROOT_MARKERS):
            return candidate
    return here


def tracking_uri(start: str | Path = ".") -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else MLflow 3's default ``sqlite:///mlflow.db`` at the project root.

    The default is made absolute so that a stage run from a sub-directory writes to the same store.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        from vlpeft.dburl import resolve_driver

        return resolve_driver(_credentials_to_env(env), "MLFLOW_TRACKING_URI")  # bare postgresql:// too
    return f"sqlite:///{project_root(start) / 'mlflow.db'}"


def _credentials_to_env(uri: str) -> str:
    """``uri`` without its ``user:password@`` when it is an HTTP server's: MLflow takes basic-auth credentials
    from ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (set here unless already set), and a URI without them
    cannot leak through what MLflow prints (its "View run ... at <uri>" line, its error messages)."""
    from vlpeft.redact import split_userinfo

    if not uri.lower().startswith(("http://", "https://")):
        return uri
    bare, user, password = split_userinfo(uri)
    if user is None:
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
    if password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    return bare


def sqlite_artifact_root(uri: str) -> str | None:
    """For ``sqlite:///path/to/x.db`` the artifact root beside the database (``path/to/mlruns``), else None.

    MLflow would otherwise put artifacts in ``./mlruns`` relative to whatever directory the process runs in.
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return str((db.parent if db.is_absolute() else Path.cwd() / db.parent) / "mlruns")


@contextlib.contextmanager
def _short_http(timeout: float) -> Iterator[None]:
    """Temporarily make MLflow's REST client fail fast: no retries, a short timeout."""
    keys = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout))),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    }
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text[:200] or type(exc).__name__


def check_tracking(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail fast with a one-line ``TrackingError`` naming ``uri`` if the tracking store does not answer.

    Makes one real API call (list one experiment) with retries off and a short timeout, so a down or
    misconfigured server (wrong port, not an MLflow server, bad scheme, unwritable sqlite path) is reported
    before training starts rather than after. Returns the URI that was checked.
    """
    quiet_mlflow_env()
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.parent.is_dir():
            raise TrackingError(f"tracking URI {uri}: directory {db.parent} does not exist")
    try:
        from mlflow.tracking import MlflowClient

        with _short_http(timeout):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # any failure here means "cannot track": report it in one line
        raise TrackingError(f"tracking URI {uri} is unreachable or misconfigured: {_reason(exc)}") from None
    return uri
