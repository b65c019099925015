"""Tracking never costs the run: a frozen MLflow server (accepts, never answers) costs one bounded wait, a
full local tracking log costs one warning, and a failed run's MLflow run ends FAILED, not RUNNING."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import yaml
from mlflow.tracking import MlflowClient

from vlpeft.errors import TrackingError
from vlpeft.tracking.mlflow import MlflowTracker


def test_frozen_server_costs_one_timeout_then_the_local_log(tmp_path, net, mlflow_server, monkeypatch):
    """A real server behind a 127.0.0.1 proxy that, once frozen, accepts connections and never answers."""
    monkeypatch.setenv("VLPEFT_TRACKING_TIMEOUT", "2")
    proxy = net.TcpProxy(int(mlflow_server.rsplit(":", 1)[1]))
    uri = f"http://127.0.0.1:{proxy.port}"
    log = tmp_path / "run.jsonl"
    try:
        with MlflowTracker("train@vqa", uri=uri, experiment="frozen", local_log=log) as tr:
            tr.log_metrics({"loss": 3.0}, step=0)
            proxy.freeze()
            frozen = r"logging failed, continuing without MLflow \(no answer within 2 s\)"
            with pytest.warns(RuntimeWarning, match=frozen):
                tr.log_metrics({"loss": 2.0}, step=1)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no second wait, no second warning
                tr.log_metrics({"loss": 1.0}, step=2)
            assert not tr.healthy
    finally:
        proxy.close()
    server_side = MlflowClient(mlflow_server).get_metric_history(tr.run_id, "loss")
    assert [m.value for m in server_side] == [3.0]
    local = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["data"]["loss"] for r in local if r["kind"] == "metrics"] == [3.0, 2.0, 1.0]


@pytest.mark.parametrize("value", ["soon", "0", "-1", "inf", "nan"])
def test_tracking_timeout_setting_is_checked(value, monkeypatch):
    from vlpeft.tracking.preflight import call_timeout

    monkeypatch.setenv("VLPEFT_TRACKING_TIMEOUT", value)
    with pytest.raises(TrackingError, match=rf"TRACKING_TIMEOUT='{value}': expected a positive number"):
        call_timeout()


@pytest.mark.parametrize("fails", [False, True])
def test_full_local_log_costs_a_warning_and_the_run_ends_right(fails, small_disk, sqlite_store):
    disk = small_disk("64k", free=0)
    log = disk / "tracking" / "run.jsonl"

    class Failure(Exception):
        pass

    with pytest.warns(RuntimeWarning, match=rf"{log}: no space left on device; the local tracking log stops"):
        try:
            with MlflowTracker("train@vqa", uri=sqlite_store, experiment="full-log", local_log=log) as tr:
                tr.log_metrics({"loss": 1.0}, step=0)
                tr.log_metrics({"loss": 0.5}, step=1)
                if fails:
                    raise Failure
        except Failure:
            pass
    run = MlflowClient(sqlite_store).get_run(tr.run_id)
    assert run.info.status == ("FAILED" if fails else "FINISHED")
    assert [m.value for m in MlflowClient(sqlite_store).get_metric_history(tr.run_id, "loss")] == [1.0, 0.5]


def test_training_with_a_full_local_log_exits_0(tiny_world, tiny_backbones, small_disk, tmp_path,
                                                monkeypatch):  # fmt: skip
    """``vlpeft train`` with its local tracking log on a full filesystem: the training finishes (exit 0), its
    MLflow run is FINISHED with its metrics."""
    from vlpeft.cli import main

    project = tmp_path / "project"
    project.mkdir()
    disk = small_disk("64k", free=0)
    (project / ".vlpeft").symlink_to(disk, target_is_directory=True)
    params = {
        "model": {k: str(tiny_backbones[v]) for k, v in
                  (("vision", "vit"), ("vqa_backbone", "roberta"), ("caption_backbone", "gpt2"))},
        "vqa": {"epochs": 1, "batch_size": 16, "peft": {"rank": 2, "routing": "mul"}},
        "evaluate": {"batch_size": 16},
        "tracking": {"experiment": "full-log-train"},
    }  # fmt: skip
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    with pytest.warns(RuntimeWarning, match="no space left on device; the local tracking log stops here"):
        rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features",
                   str(tiny_backbones["features"]), "--out", "out"])  # fmt: skip
    assert rc == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("full-log-train").experiment_id])
    assert run.info.status == "FINISHED" and "test/overall" in run.data.metrics
