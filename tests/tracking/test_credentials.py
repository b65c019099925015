"""A database password in the params never reaches a file, a log, MLflow or an error line, whichever command.

Real commands (``vlpeft data synth``, ``vlpeft train``, ``vlpeft config``, a config error) run as a user
runs them, tracking to a real ``mlflow server``; then every byte they wrote (the project directory with its
local tracking logs, the server's store and artifacts) and printed is searched for the password.
"""

from __future__ import annotations

import os
import subprocess
import sys

import conftest
import pytest
import yaml
from conftest import start_mlflow_server, stop

SECRET = "S3cr3t-Pw"
# Two credential forms in one URL: a password with raw "/" and "@" in its userinfo, and ?password=.
STORAGE = f"postgresql://optuna:pa/ss@{SECRET}@db.example:5432/optuna?sslmode=require&password={SECRET}"
SHOWN = "postgresql://optuna:***@db.example:5432/optuna?sslmode=require&password=***"


def _vlpeft(args: list[str], cwd, uri: str) -> subprocess.CompletedProcess:
    # The tracking URI carries basic-auth credentials too (the server ignores them): MLflow's own
    # "View run ... at <uri>" line must not print them.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri.replace("http://", f"http://tracker:{SECRET}/x@y@")}
    return subprocess.run([sys.executable, "-m", "vlpeft", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow  # a real server, three commands in their own processes
def test_no_command_leaks_the_storage_password(tiny_world, tiny_backbones, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(conftest, "SERVER_START_TIMEOUT", 600.0)  # a busy shared machine starts it slowly

    project = tmp_path / "project"
    project.mkdir()
    params = {
        "world": {"n_train": 8, "n_val": 4, "n_test": 4, "corpus_scenes": 4, "image_size": 32},
        "model": {k: str(tiny_backbones[v]) for k, v in
                  (("vision", "vit"), ("vqa_backbone", "roberta"), ("caption_backbone", "gpt2"))},
        "vqa": {"epochs": 1, "batch_size": 16, "peft": {"rank": 2, "routing": "mul"}},
        "evaluate": {"batch_size": 16},
        "sweep": {"storage": STORAGE},
        "tracking": {"experiment": "leak-check"},
    }  # fmt: skip
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "server").mkdir()
    server, uri = start_mlflow_server(tmp_path / "server")
    try:
        runs = [
            _vlpeft(["data", "synth", "--out", "data"], project, uri),
            _vlpeft(["train", "--task", "vqa", "--data", str(tiny_world), "--features",
                     str(tiny_backbones["features"]), "--out", "out"], project, uri),
            _vlpeft(["config"], project, uri),
        ]  # fmt: skip
        for r in runs:
            assert r.returncode == 0, r.stderr[-3000:]
        # Errors that quote the offending section or value.
        errors = [
            _vlpeft(["config", "-S", "sweep.rank=[0]"], project, uri),
            _vlpeft(["config", "-S", "sweep.storage=[1]"], project, uri),
            _vlpeft(["config", "-S", f"sweep.storage=[{STORAGE}"], project, uri),  # malformed --set value
            _vlpeft(["train", "--task", "vqa", "--data", str(tiny_world), "--out", "out2"], project, uri),
        ]
        for r in errors:
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("leak-check")
        found = client.search_runs([experiment.experiment_id])
        assert {r.data.tags["stage"] for r in found} >= {"data", "train@vqa"}
        for run in found:  # the value is tracked, with its password hidden
            assert run.data.params["sweep.storage"] == SHOWN
    finally:
        stop(server)

    assert SHOWN in runs[2].stdout and SECRET not in runs[2].stdout
    assert "View run train@vqa at: http://127.0.0.1" in runs[1].stdout  # MLflow's line, without credentials
    printed = [r.stdout + r.stderr for r in runs + errors]
    assert [text for text in printed if SECRET in text] == []
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "params.yaml"]
    assert any(".vlpeft" in p.parts for p in written)  # the local tracking logs are among them
    assert any(p.name == "mlflow.db" for p in written)  # and the server's store
    assert [p for p in written if SECRET.encode() in p.read_bytes()] == []
