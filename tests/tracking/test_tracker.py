"""MlflowTracker against a temp sqlite store and a real ``mlflow server``; provenance; fast failures."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from vlpeft.config import Params, flatten, params_to_dict
from vlpeft.errors import TrackingError
from vlpeft.tracking import NullTracker, Tracker, check_tracking, open_tracker
from vlpeft.tracking.mlflow import MAX_PARAM_VALUE, MlflowTracker, replay_local_log
from vlpeft.tracking.provenance import (
    data_version,
    git_commit,
    git_dirty,
    producing_stage,
    provenance_tags,
    stage_dep_hashes,
)

LOCK = """\
schema: '2.0'
stages:
  data:
    cmd: vlpeft data synth
    outs:
    - path: data/synthetic
      hash: md5
      md5: 1111aaaa.dir
  train@vqa:
    cmd: vlpeft train --task vqa
    deps:
    - path: data/synthetic
      hash: md5
      md5: 0000stale.dir
    - path: models/roberta
      hash: md5
      md5: 2222bbbb.dir
    - path: vlpeft/train/run.py
      hash: md5
      md5: 3333cccc
"""


def _all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _all_artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_tracker_logs_run(tracking_uri, tmp_path):
    """One run with flattened config params, stepped metrics, file + dir artifacts, provenance tags."""
    (tmp_path / "dvc.lock").write_text(LOCK)
    adapter = tmp_path / "best"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    report = tmp_path / "report.json"
    report.write_text('{"overall": 0.5}')
    config = params_to_dict(Params())
    with MlflowTracker("train@vqa", config=config, experiment="t", local_log=tmp_path / "log.jsonl") as tr:
        assert isinstance(tr, Tracker)
        for step in range(3):
            tr.log_metrics({"train/loss": 1.0 / (step + 1), "val/yes/no": 0.1 * step}, step=step)
        tr.log_artifact(adapter, "adapter")
        tr.log_artifact(report, "eval")
        tr.set_tags({"method": "lora"})
    client = MlflowClient(tracking_uri)
    run = client.get_run(tr.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["vqa.peft.routing"] == "none"
    assert run.data.params["sweep.routing"] == "none,mul,vl"
    assert len(run.data.params) == len(flatten(config))
    history = client.get_metric_history(tr.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert client.get_metric_history(tr.run_id, "val/yes/no")[-1].value == pytest.approx(0.2)
    tags = run.data.tags
    assert tags["stage"] == "train@vqa" and tags["method"] == "lora"
    assert tags["dvc_data_hash"] == data_version("train@vqa", tmp_path / "dvc.lock") != "unknown"
    assert tags["git_commit"] == "unknown"  # tmp_path is not a git checkout
    assert _all_artifacts(client, tr.run_id) == {
        "config/params.yaml",
        "adapter/adapter_model.safetensors",
        "eval/report.json",
    }
    local = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in local if r["kind"] == "metrics"] == [0, 1, 2]
    if tracking_uri.startswith("sqlite"):  # artifacts sit beside the database, not in the cwd
        assert (Path(tracking_uri[len("sqlite:///") :]).parent / "mlruns" / "t").is_dir()
        assert not (tmp_path / "mlruns").exists()


def test_long_param_values_are_cut(tracking_uri):
    with MlflowTracker("x", experiment="t") as tr:
        tr.log_params({"a": {"long": "v" * 7000, "short": 3}})
    params = MlflowClient(tracking_uri).get_run(tr.run_id).data.params
    assert len(params["a.long"]) == MAX_PARAM_VALUE and params["a.long"].endswith("…")
    assert params["a.short"] == "3"


def test_failed_body_marks_run_failed(tracking_uri):
    with pytest.raises(ValueError), MlflowTracker("x", experiment="t") as tr:
        raise ValueError("boom")
    assert MlflowClient(tracking_uri).get_run(tr.run_id).info.status == "FAILED"


def test_dvc_hash_prefers_upstream_outs_and_skips_code(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(LOCK)
    assert stage_dep_hashes("train@vqa", lock) == {
        "data/synthetic": "1111aaaa.dir",
        "models/roberta": "2222bbbb.dir",
    }
    assert stage_dep_hashes("nope", lock) == {}
    assert data_version("train@vqa", tmp_path / "missing.lock") == "unknown"
    before = data_version("train@vqa", lock)
    lock.write_text(LOCK.replace("1111aaaa", "9999ffff"))
    assert data_version("train@vqa", lock) != before


def test_under_dvc_the_stage_and_root_come_from_dvc(tmp_path, monkeypatch):
    (tmp_path / "dvc.lock").write_text(LOCK)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "train@vqa")
    tags = provenance_tags("train")
    assert tags["stage"] == "train" and tags["dvc_stage"] == "train@vqa"
    assert tags["dvc_data_hash"] == data_version("train@vqa", tmp_path / "dvc.lock") != "unknown"
    assert producing_stage(tmp_path / "data" / "synthetic" / "images", tmp_path / "dvc.lock") == "data"
    assert producing_stage(tmp_path / "elsewhere", tmp_path / "dvc.lock") is None


def test_git_commit_and_dirty(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert len(git_commit(tmp_path)) == 40 and git_dirty(tmp_path) is False
    (tmp_path / "f.txt").write_text("b")
    assert git_dirty(tmp_path) is True
    assert git_commit(tmp_path / "..") in ("unknown", git_commit(tmp_path / ".."))


# ------------------------------------------------------------------------------------------------ failure


def test_unreachable_server_fails_fast_before_the_body(net):
    uri = f"http://127.0.0.1:{net.free_port()}"
    started = time.monotonic()
    ran = False
    with pytest.raises(TrackingError) as err, MlflowTracker("train@vqa", uri=uri):
        ran = True
    assert not ran
    assert time.monotonic() - started < 10
    assert uri in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("uri", ["file:./mlruns", "nope://host/x", "sqlite:////no/such/dir/mlflow.db"])
def test_misconfigured_uri_is_one_line(uri):
    with pytest.raises(TrackingError, match="tracking URI") as err:
        check_tracking(uri)
    assert uri in str(err.value) and "\n" not in str(err.value)


def test_non_mlflow_http_server_is_misconfigured(tmp_path, net):
    port = net.free_port()
    proc = subprocess.Popen(
        ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        net.wait_http_ok(f"http://127.0.0.1:{port}/", proc, 15)
        with pytest.raises(TrackingError, match=f"127.0.0.1:{port}"):
            check_tracking(f"http://127.0.0.1:{port}")
    finally:
        net.stop(proc)


def test_logging_failure_mid_run_keeps_going_and_local_log_replays(tracking_uri, tmp_path):
    """MLflow refuses a changed param: the run warns once and goes on; the local log replays in full."""
    log = tmp_path / "run.jsonl"
    with MlflowTracker("train@caption", experiment="t", local_log=log) as tr:
        tr.log_params({"lr": 0.1})
        with pytest.warns(RuntimeWarning, match="continuing without MLflow"):
            tr.log_params({"lr": 0.2})
        assert not tr.healthy
        tr.log_metrics({"loss": 2.0}, step=0)
        tr.log_metrics({"loss": 1.0}, step=1)
    client = MlflowClient(tracking_uri)
    assert client.get_metric_history(tr.run_id, "loss") == []
    new_id = replay_local_log(log, experiment="t")
    assert [m.value for m in client.get_metric_history(new_id, "loss")] == [2.0, 1.0]
    assert client.get_run(new_id).data.tags["stage"] == "train@caption"


def test_open_tracker_respects_enabled(tracking_uri, tmp_path):
    params = Params()
    params.tracking.enabled = False
    with open_tracker(params, "train@vqa") as tr:
        assert isinstance(tr, NullTracker)
        tr.log_metrics({"a": 1.0}, step=1)
    assert tr.metrics == [(1, {"a": 1.0})]
    params.tracking.enabled = True
    params.tracking.experiment = "exp"
    with open_tracker(params, "train@vqa") as tr:
        assert isinstance(tr, MlflowTracker)
        tr.log_metrics({"loss": 0.5}, step=3)
    assert MlflowClient(tracking_uri).get_run(tr.run_id).data.params["tracking.experiment"] == "exp"
    (log,) = (tmp_path / ".vlpeft" / "tracking").glob("train@vqa-*.jsonl")  # the local copy, by default
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"kind": "metrics", "step": 3, "data": {"loss": 0.5}}.items() <= records[-2].items()


def test_server_dying_mid_run_loses_nothing(tmp_path, net, mlflow_server, sqlite_store):
    """The server vanishes mid-run (its only route, a TCP proxy, closes): one warning, the run goes on, and
    the local log replays every metric."""
    proxy = net.TcpProxy(int(mlflow_server.rsplit(":", 1)[1]))
    uri = f"http://127.0.0.1:{proxy.port}"
    log = tmp_path / "run.jsonl"
    try:
        with MlflowTracker("train@vqa", uri=uri, experiment="die", local_log=log) as tr:
            tr.log_metrics({"loss": 3.0}, step=0)
            proxy.close()
            started = time.monotonic()
            with pytest.warns(RuntimeWarning, match=f"tracking URI {uri}: logging failed"):
                tr.log_metrics({"loss": 2.0}, step=1)
            tr.log_metrics({"loss": 1.0}, step=2)
            assert not tr.healthy and time.monotonic() - started < 30  # few retries, then on without MLflow
    finally:
        proxy.close()
    server_side = MlflowClient(mlflow_server).get_metric_history(tr.run_id, "loss")
    assert [m.value for m in server_side] == [3.0]  # what got through before the crash
    new_id = replay_local_log(log, experiment="die", uri=sqlite_store)
    history = MlflowClient(sqlite_store).get_metric_history(new_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
