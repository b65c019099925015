"""Optuna storage for a sweep: which backend, the study and its queue of trial slots, dead-worker recovery.

A sweep is a fixed queue of trial slots (``enqueue_trial``) created once, before any worker starts (this also
avoids the sqlite schema-creation race of concurrent workers). Workers open the storage with
``queue_only=True``: they run queued slots and stop when none is left, instead of creating new trials, so the
number of trials is exactly what was asked for however many workers share the study. Retries of trials whose
worker died are new queued slots (``RetryHeartbeatStaleTrialCallback``) and are run like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.pool import NullPool

from vlpeft.config import SweepConfig
from vlpeft.dburl import resolve_driver
from vlpeft.errors import ConfigError
from vlpeft.redact import redact_text

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

SPACE_ATTR = "vlpeft_space"  # study user attr: the search space the study was created with
WORKER_ATTR = "worker"  # trial user attr: host:pid of the process running it


class QueueEmpty(Exception):
    """No queued trial slot is left for this worker (the sweep's trial budget is used up)."""


class _QueueOnly:
    """Mixin: ``ask()`` may pop a queued (WAITING) trial but never create a new one."""

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:  # ask() with an empty queue; enqueue/add_trial pass a template
            raise QueueEmpty
        return super().create_new_trial(study_id, template_trial)  # type: ignore[misc]

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # Optuna's cache layer in front of RDBStorage calls this one directly.
        if template_trial is None:
            raise QueueEmpty
        return super()._create_new_trial(study_id, template_trial)  # type: ignore[misc]


class QueuedRDBStorage(_QueueOnly, RDBStorage):
    """``RDBStorage`` whose workers only run queued trial slots."""


class QueuedJournalStorage(_QueueOnly, JournalStorage):
    """``JournalStorage`` whose workers only run queued trial slots."""


def resolve_storage(storage: str | None, out_dir: str | Path) -> str:
    """The storage string a sweep uses: ``sweep.storage``, or a sqlite file ``optuna.db`` in ``out_dir``."""
    if storage:
        return storage
    return f"sqlite:///{(Path(out_dir) / 'optuna.db').resolve()}"


def is_journal(storage: str) -> bool:
    """Anything without ``://`` (optionally prefixed ``journal:``) is an Optuna journal file."""
    return "://" not in storage


def redact(storage: str) -> str:
    """The storage string without a password, for logs and reports."""
    return redact_text(storage)


def open_storage(storage: str, sweep: SweepConfig, queue_only: bool = False) -> optuna.storages.BaseStorage:
    """Open ``storage`` with heartbeat + retry of stale trials (RDB) or a file lock (journal).

    Unreachable databases and missing drivers become a ``ConfigError`` naming ``sweep.storage``.
    """
    if is_journal(storage):
        path = storage.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        return (QueuedJournalStorage if queue_only else JournalStorage)(backend)
    storage = resolve_driver(storage, "sweep.storage")
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if storage.startswith("sqlite:"):
        # Several workers write to one file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
        db = storage.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    cls = QueuedRDBStorage if queue_only else RDBStorage
    try:
        with warnings.catch_warnings():  # heartbeat and the retry callback are "experimental" since 2.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retry)
            return cls(
                storage,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=sweep.heartbeat_interval,
                grace_period=sweep.grace_period or 2 * sweep.heartbeat_interval,
                heartbeat_stale_trial_callback=callback,
            )
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"sweep.storage {redact(storage)}: database driver not installed ({exc.name})"
        ) from None
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"sweep.storage {redact(storage)}: cannot open ({reason})") from None


@contextlib.contextmanager
def study_lock(storage: str, study_name: str) -> Iterator[None]:
    """Hold a lock only one process at a time can hold for ``study_name`` on ``storage``, database-wide.

    Preparing a study (create it, count its slots, enqueue the missing ones, open its MLflow parent run) is
    a read-then-write: two sweeps started at the same instant would both see an empty study and both enqueue
    every slot. Under this lock the second one sees the first one's slots and parent run. PostgreSQL: a
    session advisory lock; MySQL: ``GET_LOCK``; sqlite and journal files: an ``fcntl`` lock on a file beside
    the database (they are local to one machine, or to one NFS export for journals), left in place.
    """
    key = f"vlpeft-sweep:{study_name}"
    if is_journal(storage) or storage.startswith("sqlite:"):
        path = storage.removeprefix("journal:") if is_journal(storage) else storage.split(":///", 1)[-1]
        if not path or path == ":memory:":
            yield
            return
        lock_path = Path(f"{path}.vlpeft-lock")  # not "<path>.lock": Optuna's journal lock file is that one
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as fh:
            fcntl.lockf(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(fh, fcntl.LOCK_UN)
        return
    from sqlalchemy import create_engine, text

    url = resolve_driver(storage, "sweep.storage")
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    acquire, release = {
        "postgresql": ("SELECT pg_advisory_lock(hashtext(:k))", "SELECT pg_advisory_unlock(hashtext(:k))"),
        "mysql": ("SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)"),
    }.get(dialect, (None, None))
    if acquire is None:  # another database: Optuna's own transactions are all there is
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        try:
            conn = engine.connect()
            conn.execute(text(acquire), {"k": key})
            conn.commit()
        except Exception as exc:  # down server, bad credentials: one line, like open_storage
            reason = " ".join(str(exc).split())[:200]
            raise ConfigError(f"sweep.storage {redact(storage)}: cannot open ({reason})") from None
        with conn:
            try:
                yield
            finally:
                conn.execute(text(release), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


def space_fingerprint(sweep: SweepConfig, task: str, direction: str) -> str:
    """What must not change between runs on one study: task, direction and search space."""
    keys = ("sampler", "routing", "rank", "method", "lr")
    data = {"task": task, "direction": direction, **{k: getattr(sweep, k) for k in keys}}
    return json.dumps(data, sort_keys=True)


def is_retry(trial: FrozenTrial) -> bool:
    """A trial created to retry one whose worker died (it does not use a slot of the budget)."""
    return "failed_trial" in trial.system_attrs


def prepare_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    sweep: SweepConfig,
    task: str,
    plan: list[tuple[dict[str, Any], int]] | Callable[[int], list[tuple[dict[str, Any], int]]],
    direction: str = "maximize",
) -> int:
    """Create (or load) the study and enqueue the slots of ``plan`` it does not have yet; return how many.

    ``plan`` is the whole study's list of slots (rerunning with a larger one tops the study up; several
    processes preparing one study with the same plan queue it once), or a function of the number of slots
    the study already has that returns that list (``vlpeft sweep --n-trials N`` on an existing study: the
    slots it has plus N more). A study made with another space is refused.
    """
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction=direction, load_if_exists=True
    )
    fingerprint = space_fingerprint(sweep, task, direction)
    existing = study.user_attrs.get(SPACE_ATTR)
    if existing is None:
        study.set_user_attr(SPACE_ATTR, fingerprint)
    elif existing != fingerprint:
        raise ConfigError(
            f"sweep.study_name {study_name!r}: the study in this storage was made with another search space "
            f"({existing}); choose another study_name or storage"
        )
    have = sum(1 for t in study.get_trials(deepcopy=False) if not is_retry(t))
    if callable(plan):
        plan = plan(have)
    for slot in range(have, len(plan)):
        values, seed = plan[slot]
        study.enqueue_trial(values, user_attrs={"slot": slot, "seed": seed})
    return max(0, len(plan) - have)


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of a worker process (recorded on every trial it runs)."""
    import os

    return f"{socket.gethostname()}:{pid if pid is not None else os.getpid()}"


def recover_worker_trials(study: optuna.Study, worker: str, max_retry: int) -> list[int]:
    """Fail the RUNNING trials of a worker known to be dead and queue their retries; return their numbers.

    The supervisor calls this as soon as a local worker exits abnormally, for every backend (journal
    storage has no heartbeat). A trial another process already finished is left alone.
    """
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) != worker:
            continue
        try:
            storage.set_trial_system_attr(trial._trial_id, "fail_reason", f"worker {worker} died")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        retry(study, storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    return failed
