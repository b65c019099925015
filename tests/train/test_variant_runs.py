"""``vlpeft train --variant --seed --sweep-best --headline``: one final run as dvc.yaml's matrix starts it."""

from __future__ import annotations

import json

import yaml

from tests.train.conftest import tiny_params_dict


def test_train_cli_runs_a_variant_with_seed_and_writes_flat_headlines(tiny_world, train_backbones, tmp_path):
    from vlpeft.cli import main

    data = tiny_params_dict(train_backbones)
    data["tracking"] = {"enabled": False}
    data["vqa"]["epochs"] = 1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    best = tmp_path / "best_params.json"
    best.write_text(json.dumps({"vqa": {"peft": {"routing": "mul", "rank": 2}}}))
    out, headline = tmp_path / "run", tmp_path / "metrics" / "vqa-blind-5.json"
    features = str(train_backbones["features"])
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", features, "--out", str(out),
               "--params", str(params), "--variant", "blind", "--seed", "5",
               "--sweep-best", str(best), "--headline", str(headline)])  # fmt: skip
    assert rc == 0
    full = json.loads((out / "metrics.json").read_text())
    # blind = the sweep's rank, routing none, no visual prefix; the seed is the run's
    assert full["model"] | {"trainable": 0, "total": 0, "percent": 0} == {
        "trainable": 0, "total": 0, "percent": 0, "method": "lora", "routing": "none", "sharing": "single",
        "rank": 2, "visual_prefix": False, "seed": 5,
    }  # fmt: skip
    flat = json.loads(headline.read_text())
    test = full["test"]
    assert flat == {
        "overall": test["overall"],
        **{k: test["perAnswerType"][k] for k in ("yes/no", "number", "other")},
    }  # numbers only (dvc metrics show fits in 120 columns) ...
    assert test["revision"] == "master"  # ... the run's metrics.json names the official vqaEval.py revision
    assert "perQuestionType" in test  # the breakdown stays in the run's own metrics.json


def test_train_cli_unknown_variant_is_exit_2(tiny_world, train_backbones, tmp_path, capsys):
    from vlpeft.cli import main

    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--out", str(tmp_path / "run"),
               "--variant", "gated"])  # fmt: skip
    assert rc == 2 and "variant 'gated'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
