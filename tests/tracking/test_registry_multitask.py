"""The multi-task model ``vlpeft-multitask`` in the registry (sqlite store): register, pyfunc, review,
promote, bad input.

One tiny multi-task run is trained once for the module (routing ``vl``, one epoch) and registered twice; the
second registration carries a copy of its metrics with other test figures, so the review has two different
versions to compare without training a second model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from types import SimpleNamespace

import mlflow.pyfunc
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from vlpeft.cli import main
from vlpeft.errors import ConfigError, DataError
from vlpeft.io import read_json
from vlpeft.tracking.provenance import data_version
from vlpeft.tracking.registry import CHALLENGER, CHAMPION, version_by_alias
from vlpeft.train.predict import Predictor

TASKS = ["vqa", "gqa", "nlvr", "caption"]
# What the CLI reads from params.yaml here and what the run trained with: one variant, registered.
REGISTRY_PARAMS = {
    "variants": {"vl": {"task.peft.routing": "vl"}},
    "registry": {"variant": "vl"},
    "seeds": [0],
    "tracking": {"experiment": "reg-mt"},
}
TEST = {
    "vqa": {
        "score": 41.25,
        "overall": 41.25,
        "perAnswerType": {"yes/no": 60.5, "number": 20.0, "other": 35.75},
    },
    "gqa": {"score": 38.5, "accuracy": 38.5, "split": "testdev", "n": 12},
    "nlvr": {"score": 55.0, "accuracy": 55.0, "consistency": 12.5, "n": 8},
    "caption": {"score": 71.25, "Bleu_4": 0.21, "METEOR": 0.19, "ROUGE_L": 0.45, "CIDEr": 0.7125},
    "average": 51.5,
}


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory) -> SimpleNamespace:
    """One tiny multi-task run trained by ``stages.train`` (variant ``vl``, one epoch), for the whole module.

    ``world`` (with the GQA and NLVR2 files), ``features`` (pooled), ``runs`` (the runs dir), ``run`` (its
    one run), ``params`` (what the run trained with). ViT and BART are tiny and untrained, built as
    ``tests/train/test_multitask.py``'s ``mt_setup`` builds them (that module imports its directory's
    ``toy_trainer``, so it cannot be imported from here), except that the BART's weights are wide (std 0.5)
    and its EOS logit pushed down: its generated text is then non-empty and depends on every input (image,
    question, task prefix), so two code paths that agree on it got the same inputs.
    """
    from vlpeft import stages
    from vlpeft.config import (
        PretrainConfig,
        TextPretrainConfig,
        VitPretrainConfig,
        WorldConfig,
        params_from_dict,
    )
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table
    from vlpeft.data.synth import generate_world
    from vlpeft.models.vision import VisionEncoder
    from vlpeft.pretrain.run import read_corpus
    from vlpeft.pretrain.text import build_bart
    from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer
    from vlpeft.pretrain.vit import build_image_processor, build_vit
    from vlpeft.variants import resolve_variant

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("mt_registry")
    world, features = root / "world", root / "features"
    sizes = {"n_train": 16, "n_val": 4, "n_test": 4, "corpus_scenes": 20}
    generate_world(WorldConfig(image_size=32, extra_tasks=["gqa", "nlvr"], **sizes), world, seed=0,
                   progress=False)  # fmt: skip
    cfg = PretrainConfig(
        width=16, layers=2, heads=2, ffn=32,
        vit=VitPretrainConfig(image_size=32, patch_size=16), text=TextPretrainConfig(max_positions=40),
    )  # fmt: skip
    build_vit(cfg).save_pretrained(root / "vit")
    build_image_processor(cfg).save_pretrained(root / "vit")
    tok = wrap_tokenizer(train_word_tokenizer(read_corpus(world)), "roberta")
    bart = build_bart(cfg, tok)
    with torch.no_grad():
        for weight in (p for p in bart.parameters() if p.dim() == 2):
            weight.normal_(0.0, 0.5)
        bart.final_logits_bias[0, tok.eos_token_id] = -30.0
    bart.save_pretrained(root / "bart")
    tok.save_pretrained(root / "bart")
    extract_features(VisionEncoder.from_pretrained(str(root / "vit")), image_table(world), features)
    params = params_from_dict(
        {
            **REGISTRY_PARAMS,
            "model": {"vision": str(root / "vit"), "generative_backbone": str(root / "bart")},
            "multitask": {
                "epochs": 1, "seed": 1, "lr": 5e-3, "val_samples": 4, "max_train_samples": 16,
                "max_answer_tokens": 4,
                "batch_sizes": {"vqa": 16, "gqa": 16, "nlvr": 8, "caption": 16},
                "peft": {"rank": 4, "alpha": 4.0}, "test_checkpoint": "last",  # as multitask/params.yaml
            },
            "evaluate": {"batch_size": 16, "max_new_tokens": 4, "spice": "off"},
            "data": {"max_caption_tokens": 12},
            "tracking": {"enabled": False},
        },
        "tiny multitask params",
    )  # fmt: skip
    run = root / "runs" / "multitask-vl-lr0.005-0"
    stages.train(params, "multitask", data=world, features=features, out=run, variant="vl", seed=0,
                 evaluate_test=False)  # fmt: skip
    # Test figures in the layout MultiTaskData.test writes, by hand: scoring the caption test split starts
    # METEOR's JVM (~10 s here), and the registry only reads the file.
    metrics = read_json(run / "metrics.json")
    metrics["test"], metrics["test_checkpoint"] = TEST, "last"
    (run / "metrics.json").write_text(json.dumps(metrics))
    trained = resolve_variant(params, "multitask", "vl", 0)
    return SimpleNamespace(world=world, features=features, runs=root / "runs", run=run, params=trained)


def _first_per(records: list, key, n: int = 2) -> list:
    """The first record of each of the first ``n`` images (``key``): what the review samples."""
    first: dict = {}
    for rec in records:
        first.setdefault(key(rec), rec)
    return list(first.values())[:n]


def _test_rows(mt: SimpleNamespace) -> tuple[pd.DataFrame, list[str]]:
    """Pyfunc input for the review's samples (two test images per task, in ``TASKS`` order) and what the test
    evaluation's own code (the multi-task bindings, on the feature store) predicts for them."""
    from vlpeft.data.coco import load_captions
    from vlpeft.data.gqa import load_gqa
    from vlpeft.data.images import image_table
    from vlpeft.data.nlvr import load_image_names, load_nlvr
    from vlpeft.data.vqa import load_vqa
    from vlpeft.models import load_vl_model
    from vlpeft.train.run import build_task

    world = mt.world
    records = {
        "vqa": _first_per(load_vqa(world, "test"), lambda r: r.image_id),
        "gqa": _first_per(load_gqa(world, "testdev"), lambda r: r.img_id),
        "nlvr": _first_per(load_nlvr(world, "test"), lambda r: r.image_set),
        "caption": load_captions(world, "test")[:2],
    }
    paths, names = {str(i): str(p) for i, p in image_table(world)}, load_image_names(world)
    rows = [{"task": "vqa", "image": str(r.path), "question": r.question} for r in records["vqa"]]
    rows += [{"task": "gqa", "image": paths[r.img_id], "question": r.question} for r in records["gqa"]]
    rows += [{"task": "nlvr", "image": str(world / names[r.img0]["file"]), "question": r.sentence,
              "image2": str(world / names[r.img1]["file"])} for r in records["nlvr"]]  # fmt: skip
    rows += [{"task": "caption", "image": str(r.path)} for r in records["caption"]]

    binding = build_task(mt.params, "multitask", world, mt.features)
    model, t = load_vl_model(mt.run / "last"), binding.tasks
    want = []
    for task in ("vqa", "gqa"):
        want += t[task].predict(model, records[task], binding.visual(t[task])).values()
    decided = t["nlvr"].predict(model, records["nlvr"], binding.visual(t["nlvr"])).values()
    want += ["true" if v else "false" for v in decided]
    beams = mt.params.multitask.caption_beams
    want += t["caption"].captions(model, records["caption"], binding.visual(t["caption"]), beams).values()
    return pd.DataFrame(rows), want  # missing cells are NaN, as in a client's sparse frame


def test_register_twice_pyfunc_review_promote(mt_run, sqlite_store, tmp_path, monkeypatch, capsys):
    world, runs, run = mt_run.world, mt_run.runs, mt_run.run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps(REGISTRY_PARAMS))  # JSON is YAML
    # As under `dvc repro`: the lock names the stage that wrote the run (its data version, its train stage).
    stage = "train@vl-0.005-0"
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  features:\n    outs:\n    - path: features\n      md5: f00d.dir\n"
        f"  {stage}:\n    deps:\n    - path: features\n      md5: f00d.dir\n"
        f"    outs:\n    - path: {run}\n      md5: beef.dir\n"
    )
    name = f"mt-{uuid.uuid4().hex[:6]}"
    metrics = read_json(run / "metrics.json")
    test = metrics["test"]
    assert metrics["variant"] == "vl" and metrics["test_checkpoint"] == "last"

    # v1 as the DVC stage registers it: the variant's run picked from the runs dir
    out = tmp_path / "v1.json"
    assert (
        main(["register", "--task", "multitask", "--runs", str(runs), "--name", name, "--out", str(out)]) == 0
    )
    assert read_json(out)["version"] == "1" and read_json(out)["aliases"] == [CHALLENGER, CHAMPION]
    v1 = version_by_alias(name, CHAMPION)
    tags = v1.tags
    assert (tags["task"], tags["tasks"]) == ("multitask", ",".join(TASKS))
    assert (tags["method"], tags["sharing"], tags["routing"], tags["rank"]) == ("lora", "single", "vl", "4")
    assert tags["data_version"] == data_version(stage, tmp_path / "dvc.lock") != "unknown"
    assert tags["train_stage"] == stage and re.fullmatch(r"[0-9a-f]{40}", tags["code_version"])
    assert tags["model_dir"] == str(run / "last")  # the test checkpoint, whose figures these are
    assert tags["metric.average"] == f"{test['average']:.4f}"
    for task in TASKS:
        assert tags[f"metric.{task}.score"] == f"{test[task]['score']:.4f}"
    assert {"metric.vqa.overall", "metric.nlvr.consistency", "metric.caption.CIDEr"} <= set(tags)
    assert tags["params_trainable"] == str(metrics["model"]["trainable"])
    client = MlflowClient(sqlite_store, registry_uri=sqlite_store)
    reg_run = client.get_run(v1.run_id)
    assert reg_run.data.tags["stage"] == "register@multitask"
    assert reg_run.data.params["peft.routing"] == "vl" and reg_run.data.params["peft.method"] == "lora"
    assert reg_run.data.metrics["average"] == pytest.approx(test["average"])
    assert len(client.get_metric_history(v1.run_id, "history/val_average")) == 1  # the one epoch's curve

    # the same checkpoint again: no new version (content hash)
    assert main(["register", "--task", "multitask", "--runs", str(runs), "--name", name]) == 0
    assert "already registered" in capsys.readouterr().out

    # v2: the same weights in another package (a file added, so another content hash) with other test
    # figures: another checkpoint as far as the registry can tell
    retrained = tmp_path / "retrained"
    shutil.copytree(run / "last", retrained, ignore=shutil.ignore_patterns("trainer"))
    (retrained / "NOTES.txt").write_text("same weights, registered as another checkpoint by the test\n")
    other = json.loads(json.dumps(metrics))
    for task in TASKS:
        other["test"][task]["score"] += 1.0 + TASKS.index(task)
    other["test"]["average"] += 2.5
    (tmp_path / "other.json").write_text(json.dumps(other))
    args = ["register", "--task", "multitask", "--model", str(retrained), "--name", name,
            "--metrics", str(tmp_path / "other.json"), "--history", str(run / "curves.json")]  # fmt: skip
    assert main(args) == 0
    assert "version 2 (aliases: challenger)" in capsys.readouterr().out
    assert (
        version_by_alias(name, CHAMPION).version == "1" and version_by_alias(name, CHALLENGER).version == "2"
    )

    # the registered pyfunc from raw images: VQA answers, captions, GQA answers and NLVR2 decisions, exactly
    # what the test evaluation decodes from the feature store (same prefixes, lengths, beams, image pairs)
    mlflow.set_tracking_uri(sqlite_store)
    mlflow.set_registry_uri(sqlite_store)
    # the rows name local image files: only a process that asks for it reads paths (a server never does)
    pyfunc = mlflow.pyfunc.load_model(
        f"models:/{name}@{CHALLENGER}", model_config={"allow_local_paths": True}
    )
    frame, want = _test_rows(mt_run)
    got = pyfunc.predict(frame)
    assert list(got.columns) == ["output"] and list(got["output"]) == want
    answers, decisions, captions = want[:4], want[4:6], want[6:]
    assert all(answers) and all(captions) and len(set(answers)) > 1  # text that depends on the input
    assert set(decisions) <= {"true", "false"}
    captions_only = pd.DataFrame({"task": ["caption"], "image": [frame["image"][6]]})  # no optional columns
    assert list(pyfunc.predict(captions_only)["output"]) == want[6:7]
    with pytest.raises(Exception, match="task"):
        pyfunc.predict(frame.drop(columns=["task"]))

    # review: both versions per task and average, samples of every task answered by each version
    review_dir = tmp_path / "review"
    assert main(["registry", "review", "--model", name, "--out", str(review_dir), "--data", str(world),
                 "--samples", "2"]) == 0  # fmt: skip
    if os.environ.get("VLPEFT_KEEP_REVIEW"):  # to look at the report by hand
        shutil.copytree(review_dir, os.environ["VLPEFT_KEEP_REVIEW"], dirs_exist_ok=True)
    verdict = capsys.readouterr().out
    assert "Challenger scores higher on average" in verdict and "not evidence" in verdict  # single seeds
    html, md = (review_dir / "review.html").read_text(), (review_dir / "review.md").read_text()
    record = read_json(review_dir / "review.json")
    assert [s["label"] for s in record["sides"]] == ["champion v1", "challenger v2"]
    assert record["tasks"] == TASKS
    assert "<h2>Per task and average (test)</h2>" in html and "## Per task and average (test)" in md
    for text in (html, md):
        for figures in (test, other["test"]):
            assert f"{figures['average']:.4g}" in text
            for task in TASKS:
                assert f"{figures[task]['score']:.4g}" in text
    assert "<td>routing</td><td>vl</td><td>vl</td>" in html and "| routing | vl | vl |" in md
    assert "| sharing | single | single |" in md and f"| tasks | {','.join(TASKS)} |" in md
    for task in TASKS:
        assert f"<h2>Samples: {task}</h2>" in html and f"## Samples: {task}" in md
    samples = record["samples"]
    assert [s["task"] for s in samples] == [t for t in TASKS for _ in range(2)]
    nlvr = [s for s in samples if s["task"] == "nlvr"]
    assert all(s["image2"] and s["outputs"]["challenger v2"] in ("true", "false") for s in nlvr)
    assert "class='pair'" in html and "<b>statement:</b>" in html
    assert [s["image"] for s in samples] == list(frame["image"])  # the same test images as above
    assert [s["outputs"]["champion v1"] for s in samples] == want  # one model behind both versions
    assert [s["outputs"]["challenger v2"] for s in samples] == want

    # promote: champion moves to version 2 and the average's change is reported
    assert main(["registry", "promote", "--model", name]) == 0
    said = capsys.readouterr().out
    assert "champion moved from version 1 to 2" in said and "average:" in said
    assert version_by_alias(name, CHAMPION).version == "2"


def test_bad_input_is_one_line_and_exit_2(mt_run, tmp_path, capsys, monkeypatch):
    runs, run = mt_run.runs, mt_run.run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps(REGISTRY_PARAMS))
    (tmp_path / "m.json").write_text("{}")
    caption_model = tmp_path / "caption_model"
    caption_model.mkdir()
    (caption_model / "vlpeft_model.json").write_text(json.dumps({"task": "caption"}))
    cases = [
        (["--task", "multitask", "--model", str(caption_model), "--metrics", "m.json"], "'caption'-family"),
        (["--task", "vqa", "--model", str(run / "last"), "--metrics", "m.json"], "'generative'-family"),
        (["--task", "multitask", "--runs", str(tmp_path)], "no finished multitask run of variant 'vl'"),
        (["--task", "multitask", "--runs", str(runs), "--set", "seeds=[5]"], "seed 5"),
        (["--task", "multitask"], "--model and --metrics"),
    ]
    for args, message in cases:
        assert main(["register", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err

    from vlpeft.data.coco import load_captions

    predictor = Predictor.load(run / "last")
    image = Image.open(load_captions(mt_run.world, "test")[0].path).convert("RGB")
    with pytest.raises(ConfigError, match="image2"):
        predictor.outputs(["nlvr"], [image], ["there is a circle"])
    with pytest.raises(ConfigError, match="takes no question"):
        predictor.outputs(["caption"], [image], ["what is it ?"])
    with pytest.raises(ConfigError, match="needs a question"):
        predictor.outputs(["vqa"], [image], [""])
    with pytest.raises(ConfigError, match="trained on vqa, gqa, nlvr, caption"):
        predictor.outputs(["okvqa"], [image], ["what ?"])


def test_selected_run_is_the_variants_first_seed_at_the_summarys_lr(tmp_path):
    """With several learning rates the summary's choice (best mean validation average over seeds) is taken."""
    from vlpeft import stages
    from vlpeft.config import params_from_dict

    def run(name, variant, lr, seed, val):
        (tmp_path / name).mkdir()
        test = {t: {"score": 50.0} for t in TASKS} | {"average": 50.0}
        metrics = {"task": "multitask", "variant": variant, "train": {"lr": lr}, "model": {"seed": seed},
                   "val": {"last": val, "best": 0.0}, "test_checkpoint": "last", "test": test}  # fmt: skip
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))

    run("a", "vl", 0.001, 0, 46.0)  # seed 0's best alone, but its lr's mean is 38
    run("b", "vl", 0.001, 1, 30.0)
    run("c", "vl", 0.003, 0, 45.0)  # the lr with the best mean validation average (44.5): chosen
    run("d", "vl", 0.003, 1, 44.0)
    run("e", "norouting", 0.01, 0, 90.0)  # another variant never competes
    (tmp_path / "f").mkdir()  # no metrics.json: not a finished run
    params = params_from_dict({**REGISTRY_PARAMS, "seeds": [0, 1]})
    assert stages.selected_run(params, "multitask", tmp_path) == tmp_path / "c"
    second = params_from_dict({**REGISTRY_PARAMS, "seeds": [1, 0]})
    assert stages.selected_run(second, "multitask", tmp_path) == tmp_path / "d"
    with pytest.raises(DataError, match="no finished vqa run"):
        stages.selected_run(params, "vqa", tmp_path)
