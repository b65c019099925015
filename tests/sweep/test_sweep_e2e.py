"""End to end: ``vlpeft sweep`` runs real tiny trials through the real trainer, with MLflow tracking."""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.fixture(scope="module")
def sweep_features(tiny_world, tiny_backbones, tmp_path_factory):
    """A pooled feature store of every image of the tiny world, from the tiny pre-trained ViT."""
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table
    from vlpeft.models.vision import VisionEncoder

    out = tmp_path_factory.mktemp("sweep_features") / "features"
    encoder = VisionEncoder.from_pretrained(str(tiny_backbones["vit"]))
    extract_features(encoder, image_table(tiny_world), out, batch_size=64)
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sweep_cli_with_the_real_trainer(tiny_world, tiny_backbones, sweep_features, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vlpeft.cli import main
    from vlpeft.config import params_from_dict
    from vlpeft.sweep import merge_best_params

    monkeypatch.chdir(tmp_path)
    params = {
        "model": {
            "vision": str(tiny_backbones["vit"]),
            "vqa_backbone": str(tiny_backbones["roberta"]),
            "caption_backbone": str(tiny_backbones["gpt2"]),
        },
        "vqa": {"batch_size": 16, "peft": {"rank": 4, "alpha": 4.0}},
        "evaluate": {"batch_size": 16, "spice": "off"},
        "sweep": {
            "routing": ["none", "mul", "vl"],
            "rank": [2, 4],
            "n_trials": 3,
            "epochs": 2,
            "threads_per_worker": 1,
            "pruner_startup_trials": 5,
        },
        "tracking": {"enabled": True, "experiment": "sweep-e2e"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "sweep"
    code = main(["sweep", "--task", "vqa", "--data", str(tiny_world), "--features", str(sweep_features),
                 "--out", str(out), "--params", str(tmp_path / "params.yaml"), "--workers", "1"])  # fmt: skip
    assert code == 0, (out / "workers" / "worker-0.log").read_text()[-3000:]

    records = json.loads((out / "trials.json").read_text())
    assert [r["number"] for r in records] == [0, 1, 2]
    assert all(r["state"] == "COMPLETE" for r in records), records
    assert [(r["routing"], r["rank"]) for r in records] == [("none", 2), ("mul", 4), ("vl", 2)]
    for r in records:  # the objective is the best per-epoch validation accuracy the trainer reported
        assert sorted(r["intermediate"]) == ["1", "2"]
        assert r["value"] == pytest.approx(max(r["intermediate"].values()))
        assert 0.0 <= r["value"] <= 100.0  # VQA soft accuracy in percent
        assert r["metrics"]["val.best"] == pytest.approx(r["value"])
        assert "test.overall" not in r["metrics"], "trials must not score the test split"
    top = max(records, key=lambda r: r["value"])
    best = json.loads((out / "best_params.json").read_text())
    assert best == {"vqa": {"peft": {"routing": top["routing"], "rank": top["rank"]}}}
    merged = merge_best_params(params_from_dict(params), out / "best_params.json")
    assert (merged.vqa.peft.routing, merged.vqa.peft.rank, merged.vqa.epochs) == (
        top["routing"],
        top["rank"],
        6,
    )
    table = (out / "table.md").read_text()
    assert f"**{top['value']:.4f}**" in table
    for name in (
        "routing_rank.png",
        "optimization_history.png",
        "intermediate_values.png",
        "param_importances.png",
    ):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    assert not (out / "trials").exists() or not any((out / "trials").iterdir())

    # MLflow: one parent run for the study, one nested run per trial, all from our own code.
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient()
    exp = client.get_experiment_by_name("sweep-e2e")
    runs = client.search_runs([exp.experiment_id])
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.tags["optuna.study_name"] == "vlpeft-vqa" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(top["value"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2]
    for run in children:
        rec = records[int(run.data.tags["optuna.trial_number"])]
        assert run.data.tags["state"] == "COMPLETE" and run.info.status == "FINISHED"
        assert run.data.params["trial.routing"] == rec["routing"] and run.data.params["trial.rank"] == str(
            rec["rank"]
        )
        history = client.get_metric_history(run.info.run_id, "sweep_value")
        assert sorted((m.step, m.value) for m in history) == [
            (int(k), pytest.approx(v)) for k, v in sorted(rec["intermediate"].items())
        ]
        assert rec["mlflow_run_id"] == run.info.run_id
    assert len(runs) == 4
