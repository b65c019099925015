"""``vlpeft kfp submit`` against a recording stand-in of the KFP v2beta1 REST API on 127.0.0.1.

No real KFP API server can run here (it needs a Kubernetes cluster, Argo, MySQL, an object store and images
from a container registry: see fake_kfp_server.py), so this checks everything on our side of the wire.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.kubeflow.fake_kfp_server import FakeKfp
from vlpeft.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _no_kfp_context(tmp_path, monkeypatch):
    """kfp.Client reads ~/.config/kfp/context.json: keep a developer's file out of the test."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "t0ken-from-env")


def _runs(fake):
    return [r for r in fake.requests if r["method"] == "POST" and r["path"].endswith("/runs")]


def test_submit_uploads_the_compiled_spec_with_the_token_and_reuses_the_experiment(tmp_path, capsys):
    package = tmp_path / "pipeline.yaml"
    assert main(["kfp", "compile", "--out", str(package), "--image", "r.example/vlpeft:1"]) == 0
    spec, platform = yaml.safe_load_all(package.read_text())
    with FakeKfp(experiments={"vlpeft-ci": "exp-7"}) as fake:
        args = ["--experiment", "vlpeft-ci", "--namespace", "team-a", "--run-name", "ci-run", "--wait", "5"]
        code = main(["kfp", "submit", "--host", fake.url, "--package", str(package), *args])
    assert code == 0, capsys.readouterr().err
    assert all(r["auth"] == "Bearer t0ken-from-env" for r in fake.requests)
    assert not [r for r in fake.requests if r["method"] == "POST" and r["path"].endswith("/experiments")]
    (run,) = _runs(fake)
    body = json.loads(run["body"])
    assert body["experiment_id"] == "exp-7" and body["display_name"] == "ci-run"
    assert body["pipeline_spec"]["pipeline_spec"] == spec
    assert body["pipeline_spec"]["platform_spec"] == platform
    assert any(r["path"].endswith("/runs/run-1") for r in fake.requests)  # --wait polled the run
    assert "run run-1 SUCCEEDED" in capsys.readouterr().out


def test_no_cache_reaches_nested_dags_and_a_new_experiment_is_created(tmp_path):
    package = tmp_path / "pipeline.yaml"
    assert main(["kfp", "compile", "--out", str(package)]) == 0
    spec = next(yaml.safe_load_all(package.read_text()))
    nested = [n for n, c in spec["components"].items() if "dag" in c]
    assert nested  # the sweep's ParallelFor bodies
    with FakeKfp() as fake:
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(package), "--no-cache"]) == 0
    assert [json.loads(r["body"])["display_name"] for r in fake.requests
            if r["method"] == "POST" and r["path"].endswith("/experiments")] == ["vlpeft"]  # fmt: skip
    sent = json.loads(_runs(fake)[0]["body"])["pipeline_spec"]["pipeline_spec"]
    dags = [sent["root"]["dag"]] + [sent["components"][n]["dag"] for n in nested]
    tasks = [t for d in dags for t in d["tasks"].values()]
    # protobuf JSON leaves out false values: {} is enableCache false
    assert tasks and not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks)
    assert any(
        t["cachingOptions"].get("enableCache") for d in [spec["root"]["dag"]] for t in d["tasks"].values()
    )


def test_server_refusal_is_one_line(tmp_path, capsys):
    package = tmp_path / "pipeline.yaml"
    assert main(["kfp", "compile", "--out", str(package)]) == 0
    capsys.readouterr()
    with FakeKfp(status=401) as fake:
        args = ["kfp", "submit", "--host", fake.url, "--package", str(package), "--namespace", "team-a"]
        assert main(args) == 2
    err = capsys.readouterr().err
    assert "401" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
