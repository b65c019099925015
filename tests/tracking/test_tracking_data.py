"""What a tracked run records: the params its stage reads, one metric naming scheme, unique run names, and a
``dvc_data_hash`` that is right on a stage's first run and after its data changed (real DVC)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from tests.dvc_run import run_dvc
from vlpeft.config import Params, params_to_dict
from vlpeft.tracking.names import metric_key, metric_values, stage_params
from vlpeft.tracking.provenance import data_version
from vlpeft.tracking.session import open_tracker


def test_a_stage_logs_the_sections_it_reads():
    full = params_to_dict(Params())
    train = stage_params(full, "train@vqa")
    assert set(train) == {"seed", "data", "model", "evaluate", "tracking", "vqa"}
    assert set(stage_params(full, "train@caption")) == {
        "seed",
        "data",
        "model",
        "evaluate",
        "tracking",
        "caption",
    }
    assert "kfp" not in stage_params(full, "something@new") and "kfp" in full


@pytest.mark.parametrize(
    "key,expected",
    [
        ("test.perAnswerType.yes/no", "test/perAnswerType/yes_no"),
        (
            "perAnswerType.yes/no",
            "perAnswerType/yes_no",
        ),  # as versions registered before the scheme logged it
        ("train/loss", "train/loss"),
        ("history/val_average", "history/val_average"),
        ("overall", "overall"),
    ],
)
def test_metric_keys_have_one_scheme(key, expected):
    assert metric_key(key) == expected and metric_key(expected) == expected


def test_metric_values_of_nested_results():
    results = {"test": {"overall": 70.5, "perAnswerType": {"yes/no": 80.0}, "revision": "master"}, "ok": True}
    assert metric_values(results) == {"test/overall": 70.5, "test/perAnswerType/yes_no": 80.0}


def test_runs_have_unique_names_and_only_their_stage_params(sqlite_store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    monkeypatch.chdir(tmp_path)
    params = Params()
    ids = []
    for _ in range(2):
        with open_tracker(params, "train@vqa", local_log=None) as tracker:
            tracker.log_metrics({"test.perAnswerType.yes/no": 71.0, "train/loss": 1.5})
            ids.append(tracker.run_id)
    monkeypatch.setenv("DVC_STAGE", "train@vqa-best-0")
    with open_tracker(params, "train@vqa", local_log=None) as tracker:
        ids.append(tracker.run_id)
    client = MlflowClient(sqlite_store)
    runs = [client.get_run(i) for i in ids]
    names = [r.info.run_name for r in runs]
    assert len(set(names)) == 3
    assert names[0].startswith("train@vqa-") and names[2].startswith("train@vqa-best-0-")
    logged = runs[0].data.params
    assert logged["vqa.peft.routing"] == params.vqa.peft.routing
    assert not [k for k in logged if k.startswith(("kfp.", "caption.", "sweep.", "pretrain."))]
    assert len(logged) < 100  # of the 278 keys of params.yaml
    assert set(runs[0].data.metrics) == {"test/perAnswerType/yes_no", "train/loss"}


STAGE = textwrap.dedent(
    """
    import json, os, sys
    from vlpeft.tracking.provenance import provenance_tags
    tags = provenance_tags("use", ".")
    json.dump({"stage": os.environ.get("DVC_STAGE"), "hash": tags["dvc_data_hash"]}, open("seen.json", "w"))
    """
)


@pytest.mark.slow
def test_dvc_data_hash_is_right_on_the_first_run_and_after_a_change(tmp_path):
    """Under ``dvc repro`` the tag a stage's run gets equals the data version of the deps it really read:
    on its first run (no ``dvc.lock`` entry of its own yet) and after the upstream data changed (its own
    entry is the previous run's then)."""
    (tmp_path / "src.txt").write_text("one\n")
    (tmp_path / "use.py").write_text(STAGE)
    py = sys.executable
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        f"  make:\n    cmd: {py} -c \"import shutil; shutil.copy('src.txt', 'data.txt')\"\n"
        "    deps: [src.txt]\n    outs: [data.txt]\n"
        f"  use:\n    cmd: {py} use.py\n    deps: [data.txt, use.py]\n"
        "    outs: [{seen.json: {cache: false}}]\n"
    )
    run_dvc(["init", "--no-scm", "-q"], tmp_path)
    seen = []
    for text in ("one\n", "two\n"):
        (tmp_path / "src.txt").write_text(text)
        run_dvc(["repro", "-q"], tmp_path)
        seen.append(json.loads((tmp_path / "seen.json").read_text()))
        # what the finished repro records as the data `use` read: the tag must be that
        assert seen[-1] == {"stage": "use", "hash": data_version("use", tmp_path / "dvc.lock")}
    assert seen[0]["hash"] != "unknown" and seen[0]["hash"] != seen[1]["hash"]
