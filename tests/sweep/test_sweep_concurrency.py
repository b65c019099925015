"""Two sweeps started at the same instant on one PostgreSQL study: each slot runs once, one parent run.

Also the documented bare ``postgresql://`` URL (SQLAlchemy 2.1 would look for psycopg 3, which the lock does
not install) and the password in it, which must not reach any output file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

CHILD = """
import json, sys
from vlpeft.config import params_from_dict
from vlpeft.sweep.run import run_sweep
from sweep_toy_train import TOY

storage, out = sys.argv[1:3]
sweep = {"storage": storage, "study_name": "race", "n_trials": 4, "workers": 1, "threads_per_worker": 1,
         "epochs": 2, "routing": ["none", "mul"], "rank": [2, 4], "heartbeat_interval": 1}
params = params_from_dict({"sweep": sweep, "tracking": {"experiment": "race"}})
print("ready", flush=True)
sys.stdin.readline()  # the start signal, sent to both processes at once
summary = run_sweep(params, "vqa", "unused", "unused", out, train_fn=TOY, optuna_plots=False)
print(json.dumps({"queued": summary["queued_now"], "parent": summary["mlflow_parent_run_id"]}), flush=True)
"""


@pytest.mark.slow  # two sweeps on a 2-core machine: minutes
@pytest.mark.timeout(600)
def test_two_sweeps_started_together_share_one_queue_and_one_parent_run(postgres_url, tmp_path):
    from mlflow.tracking import MlflowClient

    # The documented form: no driver in the URL, and a password (trust auth accepts and ignores it), twice:
    # in the userinfo and as a ?password= parameter (both must stay out of every output file).
    storage = postgres_url.replace("postgresql+psycopg2://postgres@", "postgresql://postgres:s3cret-pw@")
    storage += "?password=qu3ry-pw"
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("race")  # the store's schema exists before the two processes race on it

    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, storage, str(tmp_path / f"out{i}")], cwd=tmp_path,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    for p in procs:  # both have imported everything and wait
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=280)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert sorted(r["queued"] for r in results) == [0, 4]  # one prepared the study, the other joined it
    study = optuna.load_study(study_name="race", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and sorted(t.user_attrs["slot"] for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert results[0]["parent"] == results[1]["parent"]
    experiment = client.get_experiment_by_name("race")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [results[0]["parent"]]
    assert len(runs) == 5  # the parent and one nested run per trial
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "summary.json" for p in written) and any(p.parent.name == "workers" for p in written)
    leaked = [p for p in written if b"s3cret-pw" in p.read_bytes() or b"qu3ry-pw" in p.read_bytes()]
    assert leaked == []
    assert b"?password=***" in (tmp_path / "out0" / "summary.json").read_bytes()


def test_bare_postgresql_url_works_with_the_installed_driver(postgres_url):
    from vlpeft.config import params_from_dict
    from vlpeft.sweep.storage import open_storage

    storage = open_storage(
        postgres_url.replace("postgresql+psycopg2://", "postgresql://"), params_from_dict({}).sweep
    )
    optuna.create_study(storage=storage, study_name="bare")
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["bare"]
