"""A registered version served by ``mlflow models serve`` answers over HTTP like the model itself, refuses bad
requests with INVALID_PARAMETER_VALUE and never opens a path a request names; ``vlpeft predict`` reads it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from PIL import Image

from vlpeft.cli import main
from vlpeft.data.vqa import load_vqa
from vlpeft.io import read_json
from vlpeft.tracking.registry import register_model
from vlpeft.train.predict import Predictor


@pytest.mark.slow
def test_mlflow_models_serve_answers_and_refuses_bad_requests(
    mlflow_server, trained_models, tiny_world, tmp_path, net, monkeypatch, capsys
):
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
        url = f"http://127.0.0.1:{port}/invocations"
        recs = load_vqa(tiny_world, "test")[:2]
        b64 = [base64.b64encode(r.path.read_bytes()).decode() for r in recs]
        good = _post(
            url,
            {
                "dataframe_split": {
                    "columns": ["image", "question"],
                    "data": [[b, r.question] for b, r in zip(b64, recs, strict=True)],
                }
            },
        )
        # the logged input example is a request the server answers (the README's curl line sends it)
        example = json.loads(
            Path(
                download_artifacts(
                    f"models:/{name}@champion", tracking_uri=mlflow_server, dst_path=str(tmp_path / "dl")
                )
            )
            .joinpath("serving_input_example.json")
            .read_text()
        )
        from_example = _post(url, example)
        # bad input: one INVALID_PARAMETER_VALUE message, HTTP 400, no stack trace or server path
        not_an_image = _post(
            url, {"dataframe_records": [{"image": base64.b64encode(b"hello").decode(), "question": "what?"}]}
        )
        garbage = _post(url, {"dataframe_records": [{"image": "%%%", "question": "what?"}]})
        # a path on the server's disk is never opened, even one that exists there
        path = _post(url, {"dataframe_records": [{"image": str(recs[0].path), "question": recs[0].question}]})
        no_question = _post(url, {"dataframe_records": [{"image": b64[0]}]})
    finally:
        net.stop(proc)
    assert good[0] == 200 and from_example[0] == 200
    images = [Image.open(r.path).convert("RGB") for r in recs]
    expected = Predictor.load(model_dir).answers(images, [r.question for r in recs])
    assert [p["answer"] for p in good[1]["predictions"]] == expected
    assert len(from_example[1]["predictions"]) == 1
    for status, body in (not_an_image, garbage, path, no_question):
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
        assert "stack_trace" not in body and "Traceback" not in body["message"]
        assert str(tmp_path) not in body["message"] and "site-packages" not in body["message"]
    assert "not a PNG/JPEG image" in not_an_image[1]["message"]
    assert "not base64 image data" in garbage[1]["message"]
    assert "looks like a file path" in path[1]["message"]
    assert "question" in no_question[1]["message"]
    assert version.version == "1"

    # `vlpeft predict --model models:/<name>@champion`: the registered model, read as data
    capsys.readouterr()
    assert main(["predict", "--model", f"models:/{name}@champion", "--image", str(recs[0].path),
                 "--question", recs[0].question]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == expected[0]
    assert main(["predict", "--model", f"models:/{name}@nosuchalias", "--image", str(recs[0].path),
                 "--question", "q"]) == 2  # fmt: skip
    assert "models:/" in capsys.readouterr().err


def _post(url: str, body: dict) -> tuple[int, dict]:
    """POST ``body`` as JSON; (HTTP status, parsed JSON answer) for successes and errors alike."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_request_path_opens_only_with_the_local_option(trained_models, tiny_world):
    """``model_config={"allow_local_paths": True}`` (load time, local use) is the only way a path is read."""
    import pandas as pd

    from vlpeft.tracking.packaging import package_model
    from vlpeft.tracking.pyfunc_model import _load_pyfunc

    rec = load_vqa(tiny_world, "test")[0]
    frame = pd.DataFrame({"image": [str(rec.path)], "question": [rec.question]})
    with tempfile.TemporaryDirectory() as tmp:
        package = package_model(trained_models["vqa_mul"] / "best", Path(tmp) / "package")
        with pytest.raises(MlflowException, match="looks like a file path"):
            _load_pyfunc(str(package)).predict(frame)
        local = _load_pyfunc(str(package), {"allow_local_paths": True}).predict(frame)
    want = Predictor.load(trained_models["vqa_mul"] / "best").answers([Image.open(rec.path).convert("RGB")],
                                                                     [rec.question])  # fmt: skip
    assert list(local["answer"]) == want


def test_decode_image_refuses_what_is_not_a_small_image(tmp_path):
    """The serving refusals one by one: each an InvalidInput naming the column (HTTP 400 when served)."""
    import io

    from vlpeft.tracking.pyfunc_model import InvalidInput, decode_image

    def png(size):
        buf = io.BytesIO()
        Image.new("RGB", size).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    assert decode_image(png((8, 8))).size == (8, 8)
    assert decode_image("data:image/png;base64," + png((4, 6))).size == (4, 6)
    (tmp_path / "x.png").write_bytes(base64.b64decode(png((8, 8))))
    cases = {
        png((9000, 8000)): "pixels",  # a few KB of PNG, 72 M pixels decoded
        base64.b64encode(b"GIF89a-not-really").decode(): "not a PNG/JPEG image",
        "not base64!": "not base64 image data",
        str(tmp_path / "x.png"): "looks like a file path",
        "../../etc/passwd": "looks like a file path",
    }
    for value, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            decode_image(value, column="image2")
    assert decode_image(str(tmp_path / "x.png"), allow_paths=True).size == (8, 8)
