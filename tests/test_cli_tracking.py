"""Every pipeline stage execution is one MLflow run (here: `vlpeft data synth` and `vlpeft features`)."""

from __future__ import annotations

import os

import mlflow

from vlpeft.cli import main


def _runs_by_stage() -> dict[str, list]:
    client = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    runs = []
    for exp in client.search_experiments():
        runs += client.search_runs([exp.experiment_id])
    by_stage: dict[str, list] = {}
    for run in runs:
        by_stage.setdefault(run.data.tags.get("stage", "?"), []).append(run)
    return by_stage


def test_data_and_features_stages_each_log_one_run(tmp_path, tiny_backbones, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = [
        "-S",
        "world.n_train=6",
        "-S",
        "world.n_val=2",
        "-S",
        "world.n_test=2",
        "-S",
        "world.corpus_scenes=3",
    ]
    assert main(["data", "synth", "--out", "world", *small]) == 0
    assert (
        main(["features", "--data", "world", "--encoder", str(tiny_backbones["vit"]), "--out", "feats"]) == 0
    )
    runs = _runs_by_stage()
    (data_run,) = runs["data"]
    assert data_run.info.status == "FINISHED"
    assert data_run.data.metrics["counts/images/train"] == 6  # group/name metric keys
    assert data_run.data.params["world.n_train"] == "6"  # the sections the data stage reads, flattened
    assert not [k for k in data_run.data.params if k.startswith(("vqa.", "kfp.", "sweep."))]
    (features_run,) = runs["features"]
    assert features_run.data.metrics["images"] == 10


def test_tracking_off_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["data", "synth", "--out", "w", "-S", "tracking.enabled=false", "-S", "world.n_train=2"]
    assert main([*args, "-S", "world.n_val=1", "-S", "world.n_test=1", "-S", "world.corpus_scenes=1"]) == 0
    assert _runs_by_stage() == {}


def test_unreachable_tracking_server_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    assert main(["data", "synth", "--out", "w", "-S", "world.n_train=2"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()
