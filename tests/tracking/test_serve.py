"""A registered version served by ``mlflow models serve`` answers over HTTP like the model itself."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from vlpeft.data.vqa import load_vqa
from vlpeft.io import read_json
from vlpeft.tracking.registry import register_model
from vlpeft.train.predict import Predictor


@pytest.mark.slow
def test_mlflow_models_serve_answers(mlflow_server, trained_models, tiny_world, tmp_path, net, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"serve-{uuid.uuid4().hex[:6]}"
    model_dir = trained_models["vqa_mul"] / "best"
    version = register_model("vqa", model_dir, read_json(trained_models["vqa_mul"] / "metrics.json"), name,
                             experiment="serve")  # fmt: skip
    port = net.free_port()
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "-w", "1"]  # fmt: skip
    # mlflow execs `uvicorn` by name: the venv's bin dir must be on PATH (it is when the venv is activated)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "PATH": path,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
                                start_new_session=True)  # fmt: skip
    try:
        net.wait_http_ok(f"http://127.0.0.1:{port}/ping", proc, 90, log)
        recs = load_vqa(tiny_world, "test")[:2]
        b64 = [base64.b64encode(r.path.read_bytes()).decode() for r in recs]
        body = {
            "dataframe_split": {
                "columns": ["image", "question"],
                "data": [[b, r.question] for b, r in zip(b64, recs, strict=True)],
            }
        }
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as resp:
            predictions = json.loads(resp.read())["predictions"]
    finally:
        net.stop(proc)
    images = [Image.open(r.path).convert("RGB") for r in recs]
    expected = Predictor.load(model_dir).answers(images, [r.question for r in recs])
    assert [p["answer"] for p in predictions] == expected
    assert version.version == "1"
