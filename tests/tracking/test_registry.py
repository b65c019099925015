"""Model registry on a real ``mlflow server``: package, register (aliases), pyfunc, review, promote, CLI."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from vlpeft.cli import main
from vlpeft.data.vqa import load_vqa
from vlpeft.errors import DataError
from vlpeft.io import read_json
from vlpeft.tracking.mlflow import MlflowTracker
from vlpeft.tracking.packaging import localize_package, package_model, read_meta
from vlpeft.tracking.provenance import data_version
from vlpeft.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    headline_metrics,
    promote,
    read_history,
    register_model,
    version_by_alias,
)
from vlpeft.tracking.report import write_review
from vlpeft.tracking.review import gather_review
from vlpeft.train.predict import Predictor


def _first_questions(world, n=4):
    recs = load_vqa(world, "test")[:n]
    return [Image.open(r.path).convert("RGB") for r in recs], [r.question for r in recs], recs


def test_package_is_self_contained_and_predicts_the_same(trained_models, tiny_world, tmp_path):
    """The packaged copy (backbones inside, paths rewritten) loads with no reference to the originals."""
    src = trained_models["vqa_mul"] / "best"
    pkg = package_model(src, tmp_path / "pkg")
    meta = read_meta(pkg / "model")
    assert {ref["path"] for ref in meta["backbones"].values()} == {
        "@package/backbones/language",
        "@package/backbones/vision",
    }
    assert meta["model"]["vision"] == "@package/backbones/vision"
    assert not (pkg / "model" / "trainer").exists()
    local = localize_package(pkg, tmp_path / "work")
    for ref in read_meta(local)["backbones"].values():
        assert ref["path"].startswith(str(pkg.resolve()))
    images, questions, _ = _first_questions(tiny_world)
    assert Predictor.load(local).answers(images, questions) == Predictor.load(src).answers(images, questions)


def test_package_refuses_a_model_whose_backbone_is_gone(trained_models, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_models["vqa_none"] / "best", model)
    meta = json.loads((model / "vlpeft_model.json").read_text())
    meta["backbones"]["language"] = {"path": "/no/such/roberta", "resolved": None}
    (model / "vlpeft_model.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="language backbone '/no/such/roberta' not found"):
        package_model(model, tmp_path / "pkg")


def test_headline_metrics_and_history_formats(trained_models, tmp_path):
    metrics = read_json(trained_models["vqa_none"] / "metrics.json")
    flat = headline_metrics(metrics)
    assert flat["overall"] == metrics["test"]["overall"]
    assert flat["perAnswerType.yes/no"] == metrics["test"]["perAnswerType"]["yes/no"]
    assert flat["model.trainable"] == metrics["model"]["trainable"]
    assert headline_metrics({"CIDEr": 1.5, "SPICE": None, "SPICE_note": "off"}) == {"CIDEr": 1.5}
    history = read_history(trained_models["vqa_mul"] / "curves.json")
    assert [r["epoch"] for r in history] == [1, 2] and "train_loss" in history[0]
    tsv = tmp_path / "h.tsv"
    tsv.write_text("step\tloss\n0\t2.5\n1\t1.5\n")
    assert read_history(tsv) == [{"step": 0.0, "loss": 2.5}, {"step": 1.0, "loss": 1.5}]


def test_register_review_promote_on_server(mlflow_server, trained_models, tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    name = f"vqa-{uuid.uuid4().hex[:6]}"
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)

    first = register_model("vqa", trained_models["vqa_none"] / "best",
                           read_json(trained_models["vqa_none"] / "metrics.json"), name, experiment="reg",
                           history=read_history(trained_models["vqa_none"] / "curves.json"))  # fmt: skip
    assert first.version == "1" and first.aliases == [CHALLENGER, CHAMPION]
    assert first.tags["routing"] == "none" and first.tags["method"] == "lora" and first.tags["rank"] == "4"
    assert first.tags["params_trainable"] == str(
        read_json(trained_models["vqa_none"] / "metrics.json")["model"]["trainable"]
    )
    assert {"data_version", "code_version", "metric.overall", "metric.perAnswerType.yes/no"} <= set(
        first.tags
    )

    # Under DVC: the stage that wrote the model gives the data version and the training run (its curves).
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  data:\n    outs:\n    - path: data/synthetic\n      md5: feed.dir\n"
        f"  train@vqa-mul:\n    deps:\n    - path: data/synthetic\n      md5: feed.dir\n"
        f"    outs:\n    - path: {trained_models['vqa_mul']}\n      md5: beef.dir\n"
    )
    monkeypatch.setenv("DVC_STAGE", "train@vqa-mul")
    with MlflowTracker("train@vqa", experiment="reg") as train_run:  # what `vlpeft train` opens
        for step in range(3):
            train_run.log_metrics({"train/loss": 3.0 - step}, step=step)
    monkeypatch.delenv("DVC_STAGE")

    # second version through the CLI: challenger only, champion stays on version 1
    out = tmp_path / "registered.json"
    code = main(["register", "--task", "vqa", "--model", str(trained_models["vqa_mul"] / "best"),
                 "--metrics", str(trained_models["vqa_mul"] / "metrics.json"), "--name", name,
                 "--history", str(trained_models["vqa_mul"] / "curves.json"), "--out", str(out),
                 "--set", "tracking.experiment=reg"])  # fmt: skip
    assert code == 0
    assert read_json(out)["version"] == "2" and read_json(out)["aliases"] == [CHALLENGER]
    assert version_by_alias(name, CHAMPION).version == "1"
    assert version_by_alias(name, CHALLENGER).version == "2"
    run = client.get_run(version_by_alias(name, CHALLENGER).run_id)
    assert run.data.tags["stage"] == "register@vqa"
    assert "metrics.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    second = version_by_alias(name, CHALLENGER).tags
    assert second["train_stage"] == "train@vqa-mul" and second["train_run_id"] == train_run.run_id
    assert second["data_version"] == data_version("train@vqa-mul", lock) != "unknown"
    assert first.tags["data_version"] == "unknown" and "train_run_id" not in first.tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "history/train_loss")] == [1, 2]

    # review: both versions' numbers, routing, curves, samples predicted by the registered pyfunc models
    review_dir = tmp_path / "review"
    args = ["registry", "review", "--model", name, "--out", str(review_dir), "--data", str(tiny_world)]
    assert main([*args, "--samples", "3"]) == 0
    if os.environ.get("VLPEFT_KEEP_REVIEW"):  # to look at the report by hand
        shutil.copytree(review_dir, os.environ["VLPEFT_KEEP_REVIEW"], dirs_exist_ok=True)
    html, md = (review_dir / "review.html").read_text(), (review_dir / "review.md").read_text()
    record = read_json(review_dir / "review.json")
    assert [s["label"] for s in record["sides"]] == ["champion v1", "challenger v2"]
    samples = record["samples"]
    for text in (html, md):
        assert "champion v1" in text and "challenger v2" in text
        for key in ("vqa_none", "vqa_mul"):
            test = read_json(trained_models[key] / "metrics.json")["test"]
            assert f"{test['overall']:.4g}" in text and f"{test['perAnswerType']['other']:.4g}" in text
    assert "| routing | none | mul |" in md and "| perAnswerType.yes/no |" in md
    assert "history/" not in md  # curves are plots, not result rows
    assert "alt='train/loss'" in html  # v2's curves come from its training run
    assert "data:image/png;base64," in html and html.count("<img") >= 3 + 1  # samples + at least one curve
    assert len({s["image"] for s in samples}) == 3  # one question per image, first test images
    images = [Image.open(s["image"]).convert("RGB") for s in samples]
    questions = [s["question"] for s in samples]
    direct = {
        k: Predictor.load(trained_models[k] / "best").answers(images, questions)
        for k in ("vqa_none", "vqa_mul")
    }
    assert [s["outputs"]["champion v1"] for s in samples] == direct["vqa_none"]
    assert [s["outputs"]["challenger v2"] for s in samples] == direct["vqa_mul"]
    assert record["sides"][1]["version"] == "2" and record["sides"][1]["tags"]["routing"] == "mul"

    # promote moves champion to the challenger; a second promote changes nothing
    moved = promote(name)
    assert moved["changed"] and (moved["previous_champion"], moved["champion"]) == ("1", "2")
    assert "overall" in moved["metrics"]
    assert version_by_alias(name, CHAMPION).version == "2"
    assert main(["registry", "promote", "--model", name]) == 0
    assert promote(name)["changed"] is False


def test_register_rejects_bad_input_in_one_line(tmp_path, capsys, sqlite_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    (tmp_path / "m.json").write_text("{}")
    code = main(
        ["register", "--task", "vqa", "--model", str(tmp_path), "--metrics", str(tmp_path / "m.json")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "vlpeft_model.json" in err and len(err.strip().splitlines()) == 1
    assert main(["registry", "promote", "--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert main(["register", "--task", "bogus", "--model", str(tmp_path), "--metrics", "m.json"]) == 2
    assert "--task" in capsys.readouterr().err


def test_register_a_run_dir_registers_its_test_checkpoint(trained_models, tmp_path, capsys):
    """``--run``: the checkpoint its metrics.json names (``test_checkpoint``), not always ``best``."""
    run = tmp_path / "vqa-best-0"
    shutil.copytree(trained_models["vqa_none"], run)
    shutil.rmtree(run / "best")  # registering must then read `last`, or fail
    metrics = read_json(run / "metrics.json")
    (run / "metrics.json").write_text(json.dumps({**metrics, "test_checkpoint": "last"}))
    name = f"run-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "registered.json"
    assert main(["register", "--task", "vqa", "--run", str(run), "--name", name, "--out", str(out)]) == 0
    version = version_by_alias(name, CHALLENGER)
    assert read_json(out)["version"] == version.version == "1"
    assert version.tags["metric.overall"] == f"{metrics['test']['overall']:.4f}"
    (run / "metrics.json").write_text(json.dumps({**metrics, "test_checkpoint": "best"}))
    capsys.readouterr()
    assert main(["register", "--task", "vqa", "--run", str(run), "--name", name]) == 2
    assert "best" in capsys.readouterr().err  # the missing checkpoint, in one line
    assert main(["register", "--task", "vqa", "--run", str(run), "--runs", str(tmp_path)]) == 2
    assert "one of --run, --runs" in capsys.readouterr().err
    assert main(["register", "--task", "vqa", "--run", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err  # checked while the command line is parsed
    (tmp_path / "empty").mkdir()
    assert main(["register", "--task", "vqa", "--run", str(tmp_path / "empty")]) == 2
    assert "not a finished train run" in capsys.readouterr().err


def test_register_with_tracking_off_registers_nothing(trained_models, tmp_path, capsys):
    out = tmp_path / "registered.json"
    best, metrics = trained_models["vqa_none"] / "best", trained_models["vqa_none"] / "metrics.json"
    args = ["register", "--task", "vqa", "--model", str(best), "--metrics", str(metrics), "--out", str(out)]
    assert main([*args, "--set", "tracking.enabled=false"]) == 0
    assert read_json(out) == {"name": "vlpeft-vqa", "registered": False}
    assert "not registered" in capsys.readouterr().out


def test_review_of_a_single_version_and_captions(
    trained_models, tiny_world, tmp_path, sqlite_store, monkeypatch
):
    """Caption model on the sqlite store: one version holds both aliases; samples are captions."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    name = f"cap-{uuid.uuid4().hex[:6]}"
    metrics = read_json(trained_models["caption"] / "metrics.json")
    v = register_model("caption", trained_models["caption"] / "best", metrics, name, experiment="reg")
    assert v.aliases == [CHALLENGER, CHAMPION] and v.tags["routing"] == "vl"
    review = gather_review(name, data_root=tiny_world, samples=2)
    assert len(review.sides) == 1
    paths = write_review(review, tmp_path / "r")
    images = [Image.open(s.image_path).convert("RGB") for s in review.samples]
    direct = Predictor.load(trained_models["caption"] / "best").captions(images)
    assert [s.outputs["champion v1"] for s in review.samples] == direct
    assert "nothing to compare" in paths["markdown"].read_text()
    with pytest.raises(Exception, match="vqa"):
        register_model("vqa", trained_models["caption"] / "best", metrics, name)
    # an `evaluate caption` metrics file (no parameter counts): they are counted from the model itself
    again = register_model(
        "caption", trained_models["caption"] / "best", {"CIDEr": 12.5, "SPICE": None}, name
    )
    assert again.aliases == [CHALLENGER] and again.tags["metric.CIDEr"] == "12.5000"
    assert again.tags["params_trainable"] == str(metrics["model"]["trainable"])
