"""Bad input to the commands: one line on stderr, exit code 2, no traceback, nothing written or lost.

A failing ``vlpeft train`` keeps the previous run's results; truncated checkpoints and feature shards, a LoRA
target that matches nothing, a params file that is not UTF-8, booleans for numbers, an ``--out`` under a
regular file, ``--n-trials 0`` / ``--workers 0`` and a sweep without its feature store.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import tiny_params_dict

from tests.cli_helpers import one_error_line
from vlpeft.cli import main


def _params_file(tmp_path, backbones, **overrides) -> str:
    data = tiny_params_dict(backbones)
    data["tracking"] = {"enabled": False}
    data["vqa"]["epochs"] = 1
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_world, train_backbones, tmp_path_factory):
    """A completed one-epoch VQA run (its results must survive the failing runs below)."""
    base = tmp_path_factory.mktemp("finished")
    params = _params_file(base, train_backbones)
    out = base / "run"
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features",
               str(train_backbones["features"]), "--out", str(out), "--params", params])  # fmt: skip
    assert rc == 0
    assert (out / "metrics.json").is_file() and (out / "predictions_test.json").is_file()
    return {"out": out, "params": params}


def test_failing_train_keeps_the_previous_results(
    finished_run, tiny_world, train_backbones, tmp_path, capsys
):
    # A user error before training starts: a missing feature store.
    out = tmp_path / "run"
    shutil.copytree(finished_run["out"], out)
    before = snapshot(out)
    # A dir that holds no store (a missing path is refused by the parser: tests/test_cli.py).
    (tmp_path / "nope").mkdir()
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", str(tmp_path / "nope"),
               "--out", str(out), "--params", finished_run["params"]])  # fmt: skip
    one_error_line(capsys, rc, "nope: incomplete feature store")
    assert snapshot(out) == before
    # A rejected --resume (other settings than the checkpoint's run).
    feats = str(train_backbones["features"])
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", feats, "--out", str(out),
               "--params", finished_run["params"], "--resume", "-S", "vqa.lr=0.5"])  # fmt: skip
    one_error_line(capsys, rc, "cannot resume: config.lr was")
    assert snapshot(out) == before


def test_truncated_checkpoint_on_resume(finished_run, tiny_world, train_backbones, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run["out"], out)
    weights = out / "last" / "trainer" / "optimizer.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = snapshot(out)
    feats = str(train_backbones["features"])
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", feats,
               "--out", str(out), "--params", finished_run["params"], "--resume"])  # fmt: skip
    one_error_line(capsys, rc, "last: checkpoint unreadable")
    assert snapshot(out) == before


def test_truncated_feature_shard(finished_run, tiny_world, train_backbones, tmp_path, capsys):
    features = tmp_path / "features"
    shutil.copytree(train_backbones["features"], features)
    shard = features / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-64])
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", str(features),
               "--out", str(tmp_path / "run"), "--params", finished_run["params"]])  # fmt: skip
    one_error_line(capsys, rc, "shard-00000.safetensors: unreadable feature shard")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_lora_target_matching_nothing(finished_run, tiny_world, train_backbones, tmp_path, capsys):
    feats = str(train_backbones["features"])
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", feats,
               "--out", str(tmp_path / "run"), "--params", finished_run["params"],
               "-S", "vqa.peft.target_modules=[query, quarry]"])  # fmt: skip
    one_error_line(capsys, rc, "peft.target_modules: 'quarry' matches no module")
    assert not (tmp_path / "run").exists()


def test_params_file_errors(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("vqa:\n  lr: 0.1  # d\xe9j\xe0\n".encode("latin-1"))
    one_error_line(capsys, main(["config", "--params", str(bad)]), "latin1.yaml: not a UTF-8 text file")
    one_error_line(
        capsys, main(["config", "-S", "vqa.epochs=true"]), "vqa.epochs: expected a number, got a boolean"
    )
    one_error_line(capsys, main(["config", "-S", "sweep.rank=[4, yes]"]), "sweep.rank: expected a number")


def test_out_under_a_regular_file_in_every_writing_command(tiny_world, train_backbones, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    data, feats = str(tiny_world), str(train_backbones["features"])
    questions = json.loads((tiny_world / "vqa" / "test_questions.json").read_text())["questions"]
    predictions = tmp_path / "predictions.json"
    predictions.write_text(
        json.dumps([{"question_id": q["question_id"], "answer": "yes"} for q in questions])
    )
    commands = [
        ["data", "synth", "--out", str(blocker / "world")],
        ["features", "--data", data, "--encoder", str(train_backbones["vit"]), "--out", str(blocker / "f")],
        ["train", "--task", "vqa", "--data", data, "--features", feats, "--out", str(blocker / "run")],
        ["sweep", "--task", "vqa", "--data", data, "--features", feats, "--out", str(blocker / "sweep")],
        ["evaluate", "vqa", "--questions", str(tiny_world / "vqa" / "test_questions.json"), "--annotations",
         str(tiny_world / "vqa" / "test_annotations.json"), "--predictions", str(predictions), "--out",
         str(blocker / "m.json")],
    ]  # fmt: skip
    params = _params_file(tmp_path, train_backbones)
    for args in commands:
        rc = main([*args, "--params", params] if args[0] != "evaluate" else args)
        one_error_line(capsys, rc, "afile is a file, not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "params.yaml", "predictions.json"]


def test_sweep_counts_are_honoured_or_refused_and_inputs_checked_first(tiny_world, train_backbones, tmp_path,
                                                                      capsys):  # fmt: skip
    params = _params_file(tmp_path, train_backbones)
    data, feats, out = str(tiny_world), str(train_backbones["features"]), str(tmp_path / "sweep")
    base = ["sweep", "--task", "vqa", "--data", data, "--out", out, "--params", params]
    one_error_line(capsys, main([*base, "--features", feats, "--n-trials", "0"]), "'--n-trials'")
    one_error_line(capsys, main([*base, "--features", feats, "--workers", "0"]), "workers 0")
    # A dir that is no feature store fails before any trial ran or any output (plots, study) was written.
    (tmp_path / "nope").mkdir(exist_ok=True)
    one_error_line(
        capsys, main([*base, "--features", str(tmp_path / "nope")]), "nope: incomplete feature store"
    )
    assert not (tmp_path / "sweep").exists()
