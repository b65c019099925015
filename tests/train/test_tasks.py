"""Both tasks end to end on the tiny world: official-format files, metrics, resume, blind baseline, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_params_dict
from safetensors.torch import load_file

from vlpeft.config import params_from_dict
from vlpeft.tracking.base import NullTracker
from vlpeft.train.run import train_task


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "trainer" / "weights.safetensors"))


@pytest.fixture(scope="module")
def vqa_run(tiny_world, train_backbones, tmp_path_factory):
    """One uninterrupted VQA run (mul routing, 2 epochs) shared by the tests below."""
    out = tmp_path_factory.mktemp("vqa_run")
    params = params_from_dict(tiny_params_dict(train_backbones))
    tracker, reports = NullTracker(), []
    flat = train_task(params, "vqa", tiny_world, train_backbones["features"], out, tracker=tracker,
                      report=lambda e, v: reports.append((e, v)), progress=False)  # fmt: skip
    return {"out": out, "flat": flat, "tracker": tracker, "reports": reports, "params": params}


def test_vqa_writes_official_formats_and_metrics(vqa_run, tiny_world):
    from vlpeft.data.vqa import load_vqa
    from vlpeft.eval import evaluate_vqa

    out = vqa_run["out"]
    for d in ("best", "last"):
        assert {"vlpeft_model.json", "answers.json", "vlpeft_train.json"} <= {
            p.name for p in (out / d).iterdir()
        }
    curves = json.loads((out / "curves.json").read_text())
    assert [c["epoch"] for c in curves] == [1, 2]
    assert all({"train_loss", "val_loss", "val_metric", "val_yes/no"} <= set(c) for c in curves)
    assert vqa_run["reports"] == [(c["epoch"], c["val_metric"]) for c in curves]

    preds = json.loads((out / "predictions_test.json").read_text())
    test = load_vqa(tiny_world, "test")
    assert [p["question_id"] for p in preds] == [r.question_id for r in test]
    assert all(set(p) == {"question_id", "answer"} and isinstance(p["answer"], str) for p in preds)

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"overall", "perAnswerType", "perQuestionType", "revision"}
    assert metrics["test"]["revision"] == vqa_run["params"].evaluate.vqa_revision == "master"
    assert set(metrics["test"]["perAnswerType"]) == {"yes/no", "number", "other"}
    annotations = json.loads((tiny_world / "vqa" / "test_annotations.json").read_text())["annotations"]
    assert metrics["test"] == evaluate_vqa(annotations, preds).to_json()
    assert metrics["val"]["best"] == max(c["val_metric"] for c in curves)
    assert vqa_run["flat"]["test.overall"] == metrics["test"]["overall"]
    # the image-shuffled control: the same test, same scorer, its own prediction file
    shuffled = json.loads((out / "shuffled-images" / "predictions_test.json").read_text())
    assert [p["question_id"] for p in shuffled] == [r.question_id for r in test]
    assert metrics["test_shuffled"] == evaluate_vqa(annotations, shuffled).to_json()
    assert 0 < metrics["model"]["trainable"] < metrics["model"]["total"]
    peft = vqa_run["params"].vqa.peft
    assert (metrics["model"]["method"], metrics["model"]["routing"]) == (peft.method, peft.routing)
    assert metrics["model"]["rank"] == peft.rank and metrics["model"]["visual_prefix"] is True
    logged = {k for _, m in vqa_run["tracker"].metrics for k in m}
    assert {"train_loss", "val_metric", "test.overall"} <= logged


def test_vqa_predictor_from_raw_image_matches_test_predictions(vqa_run, tiny_world):
    """Predictor runs the frozen encoder on the image file: same answers as the feature-store evaluation."""
    from vlpeft.data.images import load_image
    from vlpeft.data.vqa import load_vqa
    from vlpeft.train.predict import Predictor

    out = vqa_run["out"]
    predictor = Predictor.load(out / "best")
    expected = {
        p["question_id"]: p["answer"] for p in json.loads((out / "predictions_test.json").read_text())
    }
    records = load_vqa(tiny_world, "test")[:6]
    got = predictor.answers([load_image(r.path) for r in records], [r.question for r in records])
    assert got == [expected[r.question_id] for r in records]


def test_vqa_resume_after_crash_is_bitwise_identical(vqa_run, tiny_world, train_backbones, tmp_path):
    class Crash(Exception):
        pass

    def crash(epoch: int, value: float) -> None:
        if epoch == 1:
            raise Crash

    params = vqa_run["params"]
    with pytest.raises(Crash):
        train_task(
            params, "vqa", tiny_world, train_backbones["features"], tmp_path, report=crash, progress=False
        )
    assert not (tmp_path / "metrics.json").exists()
    flat = train_task(params, "vqa", tiny_world, train_backbones["features"], tmp_path, resume=True,
                      progress=False)  # fmt: skip
    a, b = _weights(vqa_run["out"] / "last"), _weights(tmp_path / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "curves.json").read_text() == (vqa_run["out"] / "curves.json").read_text()
    assert flat["test.overall"] == vqa_run["flat"]["test.overall"]


@pytest.mark.slow  # METEOR's JVM alone takes ~5 s
def test_caption_end_to_end(tiny_world, train_backbones, tiny_params, tmp_path):
    from vlpeft.data.coco import load_captions
    from vlpeft.train.predict import Predictor
    from vlpeft.train.run import build_task

    binding = build_task(tiny_params, "caption", tiny_world, train_backbones["features"])
    assert len(binding) == sum(len(r.captions) for r in load_captions(tiny_world, "train"))
    batch = binding.batch([0, 1, 2])
    eos = binding.model.eos_id
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
        n = int(mask.sum())
        assert (
            torch.equal(labels[:n], ids[:n]) and (labels[n:] == -100).all()
        )  # every token + EOS; no padding
        assert ids[n - 1] == eos
    assert binding.units(batch) == int(batch["attention_mask"].sum())

    tiny_params.caption.epochs = 1
    flat = train_task(
        tiny_params, "caption", tiny_world, train_backbones["features"], tmp_path, progress=False
    )
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert set(curves[0]) >= {"epoch", "train_loss", "val_loss", "val_cider", "val_metric"}
    assert curves[0]["val_metric"] == curves[0]["val_cider"]
    preds = json.loads((tmp_path / "predictions_test.json").read_text())
    test = load_captions(tiny_world, "test")
    assert [p["image_id"] for p in preds] == [r.image_id for r in test]
    assert all(isinstance(p["caption"], str) for p in preds)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(metrics)
    assert metrics["SPICE"] is None and "SPICE_note" in metrics
    assert flat["test.CIDEr"] == metrics["CIDEr"]
    assert flat["test_shuffled.CIDEr"] is not None and (tmp_path / "shuffled-images").is_dir()
    predictor = Predictor.load(tmp_path / "best")
    from vlpeft.data.images import load_image

    assert predictor.caption(load_image(test[0].path)) == preds[0]["caption"]


def test_blind_baseline_needs_no_features(tiny_world, tiny_params, tmp_path):
    tiny_params.model.visual_prefix = False
    tiny_params.vqa.peft.routing = "none"
    tiny_params.vqa.epochs = 1
    flat = train_task(tiny_params, "vqa", tiny_world, None, tmp_path, progress=False)
    assert "test.overall" in flat
    assert not any(k.startswith("test_shuffled") for k in flat)  # no image to shuffle
    meta = json.loads((tmp_path / "best" / "vlpeft_model.json").read_text())
    assert meta["model"]["visual_prefix"] is False and meta["peft"]["routing"] == "none"


def test_encoder_in_the_loop_matches_feature_store(tiny_world, train_backbones, tiny_params, tmp_path):
    """visual_input: images (frozen ViT run on pixels each batch) trains like the precomputed features."""
    tiny_params.vqa.epochs = 1
    a = train_task(tiny_params, "vqa", tiny_world, train_backbones["features"], tmp_path / "a",
                   evaluate_test=False, progress=False)  # fmt: skip
    tiny_params.vqa.visual_input = "images"
    b = train_task(tiny_params, "vqa", tiny_world, None, tmp_path / "b", evaluate_test=False, progress=False)
    assert b["train.final_loss"] == pytest.approx(a["train.final_loss"], rel=1e-4)
    wa, wb = _weights(tmp_path / "a" / "last"), _weights(tmp_path / "b" / "last")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-5)


def test_stale_feature_store_is_refused(tiny_world, train_backbones, tiny_params, tmp_path):
    import shutil

    from vlpeft.errors import DataError
    from vlpeft.train.run import build_task

    stale = tmp_path / "features"
    shutil.copytree(train_backbones["features"], stale)
    index = json.loads((stale / "index.json").read_text())
    index["provenance"]["weights_sha256"] = "0" * 64
    (stale / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="re-run `vlpeft features`"):
        build_task(tiny_params, "vqa", tiny_world, stale)


def _params_file(tmp_path, backbones, **overrides) -> str:
    data = tiny_params_dict(backbones)
    data["tracking"] = {"enabled": False}
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_cli_nan_loss_exits_2_with_one_line_and_no_metrics(tiny_world, train_backbones, tmp_path, capsys):
    from vlpeft.cli import main

    params = _params_file(
        tmp_path, train_backbones, vqa={"lr": 1e30, "grad_clip": 0.0, "checkpoint_every": 1}
    )
    out = tmp_path / "run"
    features = str(train_backbones["features"])
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", features,
               "--out", str(out), "--params", params])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "became" in err and "last good checkpoint" in err, err
    assert not (out / "metrics.json").exists() and not (out / "predictions_test.json").exists()
    from vlpeft.train.run import run_checkpoint

    last = run_checkpoint(out)  # in the unfinished build beside out (what --resume continues)
    assert last is not None and str(last) in err
    state = json.loads((last / "trainer" / "state.json").read_text())
    assert all(torch.isfinite(t).all() for t in _weights(last).values())
    assert state["global_step"] >= 1


def test_cli_predict_and_bad_input(vqa_run, tiny_world, capsys):
    from vlpeft.cli import main
    from vlpeft.data.vqa import load_vqa

    rec = load_vqa(tiny_world, "test")[0]
    model = str(vqa_run["out"] / "best")
    assert main(["predict", "--model", model, "--image", str(rec.path), "--question", rec.question]) == 0
    expected = {
        p["question_id"]: p["answer"]
        for p in json.loads((vqa_run["out"] / "predictions_test.json").read_text())
    }
    assert capsys.readouterr().out.strip() == expected[rec.question_id]
    assert main(["predict", "--model", model, "--image", str(rec.path)]) == 2
    assert "--question" in capsys.readouterr().err
    assert (
        main(["predict", "--model", model, "--image", str(tiny_world / "nope.png"), "--question", "q"]) == 2
    )
    assert "nope.png" in capsys.readouterr().err


def test_report_shows_what_each_variant_trained(vqa_run, tmp_path):
    """``vlpeft report --runs`` reads routing and rank from the train stage's metrics.json."""
    from vlpeft.cli import main

    out = vqa_run["out"]
    runs, metrics_dir = tmp_path / "runs", tmp_path / "metrics"
    from vlpeft.eval.compare import headline_metrics

    (runs / "vqa-best-0").mkdir(parents=True)
    metrics_dir.mkdir()
    trained = json.loads((out / "metrics.json").read_text())
    (runs / "vqa-best-0" / "metrics.json").write_text(json.dumps(trained))
    (metrics_dir / "vqa-best-0.json").write_text(json.dumps(headline_metrics("vqa", trained["test"])))
    out_json, out_md = tmp_path / "s.json", tmp_path / "s.md"
    argv = ["report", "--metrics", str(metrics_dir), "--runs", str(runs), "--out-json", str(out_json)]
    assert main([*argv, "--out-md", str(out_md)]) == 0
    row = json.loads(out_json.read_text())["vqa"]["rows"]["best"]
    peft = vqa_run["params"].vqa.peft
    assert (row["method"], row["routing"], row["rank"]) == (peft.method, peft.routing, peft.rank)
    assert row["trainable"] == trained["model"]["trainable"]
    assert f"| best | lora | {peft.routing} | {peft.rank} |" in out_md.read_text()
    # the headline file has numbers only; the revision comes from the run's metrics.json into the title
    assert "official evaluation, vqaEval.py master" in out_md.read_text()
    assert json.loads(out_json.read_text())["vqa"]["rows"]["best"]["scores"]["overall"]["mean"] == round(
        trained["test"]["overall"], 2
    )
