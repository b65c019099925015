"""Parallel sweep workers on one study, for real: sqlite, journal file and a PostgreSQL server.

The objective is the cheap toy train function (``sweep_toy_train``); what is under test is the machinery:
the queue of trial slots, worker processes, heartbeat + retry of a killed worker, supervisor recovery,
pruning and the output files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_toy_train import TOY, final_score

from vlpeft.config import params_from_dict
from vlpeft.sweep.run import _launch, run_sweep
from vlpeft.sweep.space import queue_plan
from vlpeft.sweep.storage import is_retry, open_storage, prepare_study, worker_id
from vlpeft.sweep.worker import WorkerSpec

FINISHED = {"COMPLETE", "PRUNED", "FAIL"}


def toy_params(storage: str | None, **sweep):
    cfg = {
        "routing": ["none", "mul", "vl", "add"],
        "rank": [2, 4],
        "n_trials": 10,
        "workers": 2,
        "epochs": 3,
        "storage": storage,
        "pruner_startup_trials": 2,
        "heartbeat_interval": 1,
        "grace_period": 2,
        "threads_per_worker": 1,
        **sweep,
    }
    return params_from_dict({"sweep": cfg, "tracking": {"enabled": False}})


def _storage_for(backend: str, tmp_path: Path, request) -> str | None:
    if backend == "sqlite":
        return None  # the default: optuna.db in the output directory
    if backend == "journal":
        return f"journal:{tmp_path / 'sweep.journal'}"
    # The server trusts local connections, so a password is accepted and ignored: it must not leak to files.
    return request.getfixturevalue("postgres_url").replace("postgres@", "postgres:s3cret-pw@")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql"])
def test_two_workers_run_exactly_the_requested_trials(backend, tmp_path, monkeypatch, request):
    storage = _storage_for(backend, tmp_path, request)
    monkeypatch.setenv("VLPEFT_TOY_FAIL_ROUTING", "add")
    monkeypatch.setenv("VLPEFT_TOY_SLEEP", "0.15")  # enough work that both workers get some
    out = tmp_path / "out"
    params = toy_params(storage)
    plots = backend == "sqlite"  # Optuna's plots cost seconds; once is enough
    summary = run_sweep(
        params,
        "vqa",
        tmp_path / "data",
        tmp_path / "feat",
        out,
        train_fn=TOY,
        poll_seconds=0.2,
        optuna_plots=plots,
    )

    records = json.loads((out / "trials.json").read_text())
    # No lost or duplicated trials: exactly the requested slots, unique numbers, every one accounted for.
    assert sorted(r["number"] for r in records) == list(range(10))
    assert sorted(r["slot"] for r in records) == list(range(10))
    assert all(r["retry_of"] is None for r in records)
    assert {r["state"] for r in records} <= FINISHED
    assert sum(summary["states"].values()) == 10
    # >= 2, not == 2: under heavy load the supervisor may replace a slow worker process (a new pid), which
    # loses no trial (checked above); what matters is that trials were spread over processes.
    assert len({r["worker"] for r in records}) >= 2, "both worker processes ran trials"
    # The storage itself agrees with the report.
    study = optuna.load_study(
        study_name="vlpeft-vqa", storage=open_storage(summary_storage(out, storage), params.sweep)
    )
    assert len(study.get_trials()) == 10

    # Failing trials are FAIL (unless pruned first), completed ones carry the true final value of the toy run.
    for r in records:
        assert (r["state"] == "FAIL") == (r["routing"] == "add" and r["state"] != "PRUNED"), r
        if r["state"] == "COMPLETE":
            assert r["value"] == pytest.approx(final_score(r["routing"], r["rank"], r["seed"]) * (1 - 0.5**3))
            assert sorted(r["intermediate"]) == ["0", "1", "2"]
        if r["state"] == "PRUNED":
            assert len(r["intermediate"]) < 3
    # The covering design visits every routing and every rank.
    assert {r["routing"] for r in records} == {"none", "mul", "vl", "add"}
    assert {r["rank"] for r in records} == {2, 4}

    complete = [r for r in records if r["state"] == "COMPLETE"]
    top = max(complete, key=lambda r: r["value"])
    best = json.loads((out / "best_params.json").read_text())
    assert best == {"vqa": {"peft": {"routing": top["routing"], "rank": top["rank"]}}}
    names = ["table.md", "routing_rank.png", "trials.csv", "summary.json"]
    if plots:
        names += ["optimization_history.png", "intermediate_values.png", "param_importances.png"]
    for name in names:
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text()
    assert all(f"| `{k}` |" in table for k in ("none", "mul", "vl", "add"))
    assert f"**{top['value']:.4f}**" in table
    assert not (out / "trials").exists() or not any((out / "trials").iterdir()), "trial dirs are cleaned up"
    for path in out.rglob("*"):
        assert not path.is_file() or b"s3cret-pw" not in path.read_bytes(), path


def summary_storage(out: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{out / 'optuna.db'}"


def _wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_worker_trial_is_failed_and_retried_by_heartbeat(backend, tmp_path, monkeypatch, request):
    storage = _storage_for(backend, tmp_path, request) or f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setenv("VLPEFT_TOY_SLEEP", "0.3")
    params = toy_params(storage, n_trials=5, pruner="none")
    sweep = params.sweep
    prepare_study(open_storage(storage, sweep), "kill", sweep, "vqa", queue_plan(sweep, 5, 0))
    specs = [
        WorkerSpec(
            storage=storage,
            study_name="kill",
            task="vqa",
            params=params.model_dump(mode="json"),
            data_root=str(tmp_path),
            features_dir=str(tmp_path),
            out_dir=str(tmp_path / "out"),
            train_fn=TOY,
            worker_index=i,
            poll_seconds=0.2,
        )
        for i in range(2)
    ]
    procs = [_launch(s, tmp_path / f"w{i}.json", tmp_path / f"w{i}.log") for i, s in enumerate(specs)]
    study = optuna.load_study(study_name="kill", storage=storage)
    victim = worker_id(procs[0].pid)

    def victim_running():
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [t for t in running if t.user_attrs.get("worker") == victim and t.intermediate_values]

    killed = _wait_for(victim_running, 60, "the first worker to be mid-trial")[0]
    os.kill(procs[0].pid, signal.SIGKILL)
    assert procs[0].wait(timeout=10) == -signal.SIGKILL
    try:
        assert procs[1].wait(timeout=90) == 0, (tmp_path / "w1.log").read_text()
    except subprocess.TimeoutExpired:
        procs[1].kill()
        raise

    trials = optuna.load_study(study_name="kill", storage=storage).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if is_retry(t)]
    assert [t.system_attrs["failed_trial"] for t in retries] == [killed.number]
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params and retries[0].user_attrs["slot"] == killed.user_attrs["slot"]
    originals = [t for t in trials if not is_retry(t)]
    assert sorted(t.user_attrs["slot"] for t in originals) == list(range(5))
    assert len({t.number for t in trials}) == len(trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_supervisor_recovers_a_dead_worker_on_journal_storage(tmp_path, monkeypatch):
    """Journal files have no heartbeat: the supervisor fails the dead worker's trial, retries it, respawns."""
    monkeypatch.setenv("VLPEFT_TOY_DIE_ONCE", str(tmp_path / "died-once"))
    out = tmp_path / "out"
    params = toy_params(f"journal:{tmp_path / 'j.journal'}", n_trials=4, workers=1, pruner="none")
    params = params.model_copy(update={"tracking": params.tracking.model_copy(update={"enabled": True})})
    summary = run_sweep(
        params, "caption", tmp_path, tmp_path, out, train_fn=TOY, poll_seconds=0.2, optuna_plots=False
    )
    records = json.loads((out / "trials.json").read_text())
    assert (tmp_path / "died-once").exists()
    assert summary["workers"]["respawns"] == 1 and len(summary["workers"]["crashed"]) == 1
    dead = [r for r in records if r["state"] == "FAIL"]
    assert len(dead) == 1 and "died" in dead[0]["fail_reason"]
    retry = [r for r in records if r["retry_of"] is not None]
    assert [r["retry_of"] for r in retry] == [dead[0]["number"]] and retry[0]["state"] == "COMPLETE"
    assert len(records) == 5 and sorted(r["slot"] for r in records if r["retry_of"] is None) == [0, 1, 2, 3]
    assert json.loads((out / "best_params.json").read_text())["caption"]["peft"]["routing"] == "vl"

    # MLflow: the dead worker's nested run was left RUNNING by the killed process; the supervisor closed it.
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    assert summary["mlflow_orphan_runs_closed"] == 1
    dead_run = client.get_run(dead[0]["mlflow_run_id"])
    assert dead_run.info.status == "FAILED" and dead_run.data.tags["state"] == "FAIL"
    retry_run = client.get_run(retry[0]["mlflow_run_id"])
    assert retry_run.info.status == "FINISHED" and retry_run.data.tags["state"] == "COMPLETE"
    assert retry_run.data.tags["mlflow.parentRunId"] == summary["mlflow_parent_run_id"]
    assert len(client.get_metric_history(retry_run.info.run_id, "toy_loss")) == 3

    # Topping the study up later (or from another node) adds trials under the same parent run.
    more = params.model_copy(update={"sweep": params.sweep.model_copy(update={"n_trials": 6})})
    again = run_sweep(
        more, "caption", tmp_path, tmp_path, out, train_fn=TOY, poll_seconds=0.2, optuna_plots=False
    )
    assert again["queued_now"] == 2 and again["trials"] == 7
    assert again["mlflow_parent_run_id"] == summary["mlflow_parent_run_id"]
    parent_id = summary["mlflow_parent_run_id"]
    exp = client.get_run(parent_id).info.experiment_id
    children = [r for r in client.search_runs([exp]) if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == list(range(7))
    assert client.get_run(parent_id).info.status == "FINISHED"


@pytest.mark.timeout(120)
def test_timeout_stops_starting_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("VLPEFT_TOY_SLEEP", "0.5")
    out = tmp_path / "out"
    params = toy_params(f"journal:{tmp_path / 'j.journal'}", n_trials=12, workers=1, pruner="none")
    t0 = time.time()
    summary = run_sweep(params, "vqa", tmp_path, tmp_path, out, train_fn=TOY, timeout=6, optuna_plots=False)
    assert time.time() - t0 < 30
    states = summary["states"]
    assert states.get("WAITING", 0) >= 4 and "RUNNING" not in states, states
    assert states.get("COMPLETE", 0) + states.get("FAIL", 0) + states["WAITING"] == 12
    assert json.loads((out / "best_params.json").read_text())["vqa"]["peft"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_n_trials_on_an_existing_study_adds_trials(backend, tmp_path, request):
    """``vlpeft sweep --n-trials N`` (``add_trials``) extends the study in the storage, as Optuna's
    ``optimize(n_trials=N)`` on a loaded study does; without it a rerun only tops the study up to n_trials."""
    storage = _storage_for(backend, tmp_path, request)  # sqlite: optuna.db in the (same) output dir
    out = tmp_path / "out"
    params = toy_params(storage, n_trials=3, workers=1, pruner="none", routing=["none", "vl"], rank=[2, 4])
    run = {"train_fn": TOY, "poll_seconds": 0.1, "optuna_plots": False}
    first = run_sweep(params, "vqa", tmp_path, tmp_path, out, add_trials=3, **run)
    assert (first["trials"], first["queued_now"]) == (3, 3)
    again = run_sweep(params, "vqa", tmp_path, tmp_path, out, **run)  # no --n-trials: the study has 3 already
    assert (again["trials"], again["queued_now"]) == (3, 0)
    more = run_sweep(params, "vqa", tmp_path, tmp_path, out, add_trials=2, **run)
    assert (more["trials"], more["queued_now"], more["states"]) == (5, 2, {"COMPLETE": 5})

    records = json.loads((out / "trials.json").read_text())  # the outputs cover the whole study
    assert sorted(r["number"] for r in records) == list(range(5))
    assert sorted(r["slot"] for r in records) == list(range(5))
    # The first two slots visit every routing and rank (covering points); the later ones are the sampler's.
    first_two = sorted((r["routing"], r["rank"]) for r in records if r["slot"] < 2)
    assert first_two == [("none", 2), ("vl", 4)]
    top = max(records, key=lambda r: r["value"])
    best = json.loads((out / "best_params.json").read_text())
    assert best == {"vqa": {"peft": {"routing": top["routing"], "rank": top["rank"]}}}
    study = optuna.load_study(
        study_name="vlpeft-vqa", storage=open_storage(summary_storage(out, storage), params.sweep)
    )
    assert len(study.get_trials()) == 5
