"""``vlpeft kfp submit|upload|schedule`` against a stand-in of the KFP v2beta1 REST API that applies each
backend version's rules (fake_kfp_server.py), and against hosts that are not a KFP API at all.

No real KFP API server can run here (it needs a Kubernetes cluster, Argo, MySQL, an object store and images
from a container registry: see fake_kfp_server.py), so this checks everything on our side of the wire and
what the backend, read from its source, would do with what we send.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.kubeflow.fake_kfp_server import VERSIONS, FakeKfp
from vlpeft.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")
IMAGE = "registry.example/vlpeft:1"
FAST = ["--poll", "0.01"]


@pytest.fixture(autouse=True)
def _no_kfp_context(tmp_path, monkeypatch):
    """kfp.Client reads ~/.config/kfp/context.json: keep a developer's file out of the test."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "t0ken-from-env")


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """The default params compiled for every supported backend version."""
    out = {}
    for version in VERSIONS:
        path = tmp_path_factory.mktemp("kfp") / f"pipeline-{version}.yaml"
        assert (
            main(["kfp", "compile", "--out", str(path), "--image", IMAGE, "-S", f"kfp.backend={version}"])
            == 0
        )
        out[version] = path
    return out


def _runs(fake):
    return [r for r in fake.requests if r["method"] == "POST" and r["path"].endswith("/runs")]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_submit_sends_the_compiled_spec_with_the_token_and_reuses_the_experiment(packages, capsys):
    package = packages["2.4.0"]
    spec, platform = yaml.safe_load_all(package.read_text())
    with FakeKfp(experiments={"vlpeft-ci": "exp-7"}, version="2.4.0") as fake:
        args = ["--experiment", "vlpeft-ci", "--namespace", "team-a", "--run-name", "ci-run", "--wait", "5"]
        code = main(["kfp", "submit", "--host", fake.url, "--package", str(package), *args, *FAST])
    assert code == 0, capsys.readouterr().err
    assert all(r["auth"] == "Bearer t0ken-from-env" for r in fake.requests)
    assert not [r for r in fake.requests if r["method"] == "POST" and r["path"].endswith("/experiments")]
    (run,) = _runs(fake)
    body = json.loads(run["body"])
    assert body["experiment_id"] == "exp-7" and body["display_name"] == "ci-run"
    assert body["pipeline_spec"]["pipeline_spec"] == spec
    assert body["pipeline_spec"]["platform_spec"] == platform
    states = [r for r in fake.requests if r["path"].endswith("/runs/run-1")]
    assert len(states) == 3  # PENDING, RUNNING, SUCCEEDED
    assert "run run-1 SUCCEEDED" in capsys.readouterr().out


@pytest.mark.parametrize("version", VERSIONS)
def test_each_backend_accepts_its_compile_and_applies_all_of_it(version, packages):
    """Compiled for ``kfp.backend=version``: that backend keeps the platform spec (no field it does not
    know), and its driver drops only deprecated twins' new-style copies (the old field carries the same)."""
    with FakeKfp(version=version) as fake:
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(packages[version])]) == 0
    (run,) = fake.runs.values()
    assert run["platform"] is not None and not run["dropped_platform"]
    twins = {"secretNameParameter": "secretName", "pvcNameParameter": ("constant", "taskOutputParameter")}
    for dropped in run["dropped_fields"]:  # e.g. exec-train.secretAsEnv[0].secretNameParameter at 2.4.0
        label, path = dropped.split(".", 1)
        head, _, leaf = path.rpartition(".")
        items = run["applied"][label]
        for part in head.replace("]", "").split("."):
            name, _, index = part.partition("[")
            items = items[name][int(index)] if index else items[name]
        if leaf == "optional":
            assert items.get(leaf) is False or leaf not in items  # required either way
            continue
        old = twins[leaf]
        assert any(k in items for k in ((old,) if isinstance(old, str) else old)), dropped
    if tuple(map(int, version.split("."))) < (2, 14, 0):
        assert "pipelineConfig" not in run["platform"]["platforms"]["kubernetes"]
    else:
        assert run["platform"]["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]


def test_an_old_backend_silently_drops_a_newer_platform_spec_and_submit_refuses_it(packages, capsys):
    """Kubeflow 1.10 (KFP 2.5.0): the run workspace is unknown to its PipelineConfig, so the API server
    skips the whole platform spec without an error; submit reads the server's version first and refuses."""
    newer = packages["2.17.0"]
    with FakeKfp(version="2.5.0", tag_name="dev") as fake:  # a build whose version cannot be read
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(newer)]) == 0
    (run,) = fake.runs.values()
    assert run["dropped_platform"] and run["platform"] is None  # no Secrets, no GPUs' node selector
    capsys.readouterr()
    with FakeKfp(version="2.5.0") as fake:
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(newer)]) == 2
    assert "runs KFP 2.5.0" in _one_line(capsys) and not fake.runs


def test_workspace_rules(packages, tmp_path, capsys):
    """Without accessModes: refused at CreateRun from 2.15 (no admin default), FAILED at 2.14."""
    spec, platform = yaml.safe_load_all(packages["2.15.0"].read_text())
    del platform["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]["kubernetes"]["pvcSpecPatch"][
        "accessModes"
    ]
    bad = tmp_path / "no-modes.yaml"
    bad.write_text(yaml.safe_dump_all([spec, platform], sort_keys=False))
    with FakeKfp(version="2.15.0") as fake:
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(bad)]) == 2
    assert "HTTP 500" in (err := _one_line(capsys)) and "must specify accessModes" in err
    with FakeKfp(version="2.15.0", workspace_default={"accessModes": ["ReadWriteMany"]}) as fake:
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(bad)]) == 0
    with FakeKfp(version="2.14.0", tag_name="dev") as fake:  # (a 2.15 package: submit would refuse 2.14)
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(bad), "--wait", "5", *FAST]) == 1
    assert "FAILED: PersistentVolumeClaim is invalid" in capsys.readouterr().out


def test_wait_exits_non_zero_when_the_run_fails(packages, capsys):
    with FakeKfp(version="2.4.0", outcome="FAILED") as fake:
        args = [
            "kfp",
            "submit",
            "--host",
            fake.url,
            "--package",
            str(packages["2.4.0"]),
            "--wait",
            "5",
            *FAST,
        ]
        assert main(args) == 1
    assert "run run-1 FAILED: task train-vqa-best-0 failed" in capsys.readouterr().out
    with FakeKfp(version="2.4.0") as fake:  # --wait shorter than the run: still running is not success
        args = ["kfp", "submit", "--host", fake.url, "--package", str(packages["2.4.0"]), "--wait", "0.01"]
        assert main([*args, "--poll", "0.05"]) == 2
    err = _one_line(capsys)  # not yet at a final state when --wait ran out
    assert "still PENDING after" in err or "still RUNNING after" in err


def test_multi_user_needs_a_namespace(packages, capsys):
    package = str(packages["2.4.0"])
    with FakeKfp(version="2.4.0", multi_user=True) as fake:
        assert main(["kfp", "submit", "--host", fake.url, "--package", package]) == 2
        assert "multi-user mode: pass --namespace" in _one_line(capsys) and not fake.runs
        assert main(["kfp", "submit", "--host", fake.url, "--package", package, "--namespace", "team-a"]) == 0
    created = [
        json.loads(r["body"]) for r in fake.requests if r["method"] == "POST" and "experiments" in r["path"]
    ]
    assert created == [{"display_name": "vlpeft", "namespace": "team-a"}]


def test_package_with_params_is_refused(packages, capsys):
    args = ["kfp", "submit", "--host", "http://127.0.0.1:9", "--package", str(packages["2.4.0"])]
    assert main([*args, "-S", "kfp.sweep_workers=9"]) == 2
    assert "--package: already compiled" in _one_line(capsys)


def test_upload_versions_run_from_a_version_and_schedule(packages, capsys):
    package = str(packages["2.17.0"])
    with FakeKfp(version="2.17.0") as fake:
        assert main(["kfp", "upload", "--host", fake.url, "--package", package, "--version", "v1"]) == 0
        assert main(["kfp", "upload", "--host", fake.url, "--package", package, "--version", "v2"]) == 0
        run = ["kfp", "submit", "--host", fake.url, "--pipeline", "vlpeft", "--version", "v1", "--wait", "5"]
        assert main([*run, *FAST]) == 0
        assert main(["kfp", "submit", "--host", fake.url, "--pipeline", "vlpeft", "--version", "v9"]) == 2
        assert "no version 'v9'" in _one_line(capsys)
        assert (
            main(["kfp", "schedule", "--host", fake.url, "--cron", "0 0 3 * * *", "--pipeline", "vlpeft"])
            == 0
        )
        assert main(["kfp", "schedule", "--host", fake.url, "--cron", "0 3 * * *"]) == 2
        assert "six fields" in _one_line(capsys)
    (pid,) = fake.pipelines
    assert [v["display_name"] for v in fake.versions[pid]][-2:] == ["v1", "v2"]
    (run,) = fake.runs.values()
    v1 = next(v for v in fake.versions[pid] if v["display_name"] == "v1")
    assert run["body"]["pipeline_version_reference"] == {
        "pipeline_id": pid,
        "pipeline_version_id": v1["pipeline_version_id"],
    }
    (job,) = fake.recurring.values()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    v2 = next(v for v in fake.versions[pid] if v["display_name"] == "v2")
    assert job["pipeline_version_reference"]["pipeline_version_id"] == v2["pipeline_version_id"]  # the newest


def test_no_cache_reaches_nested_dags(packages):
    package = packages["2.4.0"]
    spec = next(yaml.safe_load_all(package.read_text()))
    nested = [n for n, c in spec["components"].items() if "dag" in c]
    assert nested  # the sweep's ParallelFor bodies
    with FakeKfp(version="2.4.0") as fake:
        assert main(["kfp", "submit", "--host", fake.url, "--package", str(package), "--no-cache"]) == 0
    sent = json.loads(_runs(fake)[0]["body"])["pipeline_spec"]["pipeline_spec"]
    dags = [sent["root"]["dag"]] + [sent["components"][n]["dag"] for n in nested]
    tasks = [t for d in dags for t in d["tasks"].values()]
    # protobuf JSON leaves out false values: {} is enableCache false
    assert tasks and not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks)


def test_server_refusal_is_one_line(packages, capsys):
    with FakeKfp(status=401) as fake:
        args = ["kfp", "submit", "--host", fake.url, "--package", str(packages["2.4.0"]), "--namespace", "a"]
        assert main(args) == 2
    err = _one_line(capsys)
    assert "HTTP 401" in err and "Unauthenticated" in err


class _Answer(BaseHTTPRequestHandler):
    """Answers every request with the class's status, content type and body."""

    status, ctype, body = 200, "text/html", b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.ctype)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_POST = do_GET


def _serve(status: int, ctype: str, body: bytes):
    handler = type("H", (_Answer,), {"status": status, "ctype": ctype, "body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(
    ("status", "ctype", "body", "message"),
    [
        (200, "text/html", b"<!DOCTYPE html><html><body>Sign in with Dex</body></html>", "HTML page"),
        (404, "text/plain", b"404 page not found", "HTTP 404"),
        (200, "application/json", b'{"kind": "Status"}', None),  # JSON, but not KFP: no tag_name, no run id
    ],
)
def test_bad_hosts_are_one_line_and_non_zero(status, ctype, body, message, packages, capsys):
    server = _serve(status, ctype, body)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code = main(["kfp", "submit", "--host", url, "--package", str(packages["2.4.0"]), "--timeout", "5"])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2
    err = _one_line(capsys)
    assert message is None or message in err
    assert url in err


def test_a_host_that_never_answers_times_out(packages, capsys):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert (
            main(["kfp", "submit", "--host", url, "--package", str(packages["2.4.0"]), "--timeout", "0.5"])
            == 2
        )
    finally:
        silent.close()
    assert "no answer" in _one_line(capsys)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: refused
    assert (
        main(["kfp", "submit", "--host", f"http://127.0.0.1:{port}", "--package", str(packages["2.4.0"])])
        == 2
    )
    assert "refused" in _one_line(capsys).lower()
