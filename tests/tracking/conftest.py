"""Fixtures for tracking tests: one real ``mlflow server`` per session, and tracking URIs to run against."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

# Generous: a real server's start-up (imports, DB migration) took over 60 s on a 2-core machine under load.
SERVER_START_TIMEOUT = 240.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{text}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process we started (its own session): SIGTERM its group, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:  # uvicorn's graceful shutdown is slow; these are throwaway stores
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # uvicorn worker / job runner children share the group: make sure none survive the parent
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class TcpProxy:
    """A TCP forwarder on a free 127.0.0.1 port to ``target_port``; ``close()`` makes the server vanish for
    its clients exactly like a crashed one (open connections reset, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        self.frozen = False
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        """From now on the server is frozen (a hung process, a SIGSTOPped pod): connections are accepted and
        requests read, and nothing is ever answered."""
        self.frozen = True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            if self.closed:
                client.close()
                return
            self.sockets.append(client)
            if self.frozen:  # read and drop what the client sends, answer nothing
                threading.Thread(target=self._pump, args=(client, None), daemon=True).start()
                continue
            self.sockets.pop()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while data := src.recv(65536):
                if dst is not None and not self.frozen:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            if dst is not None and not self.frozen:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):  # wakes the blocked accept() (close alone does not on Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def start_mlflow_server(root: Path) -> tuple[subprocess.Popen, str]:
    """Start a real ``mlflow server`` on 127.0.0.1 (free port, 1 worker, sqlite store and proxied artifacts
    under ``root``) and wait for ``/health``; returns the process (stop it with ``stop``) and its URI."""
    port = free_port()
    log = root / "server.log"
    # No background job runner (a second heavy process, unused here): the server is ready ~1/3 sooner.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
        )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", proc, SERVER_START_TIMEOUT, log)
    except BaseException:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """One real ``mlflow server`` for the whole session (starting one costs ~7 s)."""
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield uri
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory) -> str:
    """One temp sqlite store per session: creating the schema costs ~4 s, so tests share it."""
    from vlpeft.tracking import check_tracking

    return check_tracking(f"sqlite:///{tmp_path_factory.mktemp('mlflow_sqlite') / 'mlflow.db'}")


@pytest.fixture
def net() -> SimpleNamespace:
    """Helpers for tests that start their own local processes."""
    return SimpleNamespace(
        free_port=free_port,
        wait_http_ok=wait_http_ok,
        stop=stop,
        start_mlflow_server=start_mlflow_server,
        TcpProxy=TcpProxy,
    )


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request, tmp_path, monkeypatch) -> str:
    """Both backends every tracking test must work with; also exported as ``MLFLOW_TRACKING_URI``."""
    if request.param == "server":
        uri = request.getfixturevalue("mlflow_server")
    else:
        uri = request.getfixturevalue("sqlite_store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


# ------------------------------------------------------------------------------------ tiny trained models


@pytest.fixture(scope="session")
def tiny_backbones(tiny_world, tmp_path_factory) -> dict[str, Path]:
    """Tiny untrained backbones (vit, roberta, gpt2; width 16) and a pooled feature store of the tiny world.

    Built with the same builders as ``vlpeft pretrain`` / ``vlpeft features``, without the training.
    """
    import torch

    from vlpeft.config import PretrainConfig, TextPretrainConfig, VitPretrainConfig
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table
    from vlpeft.models.vision import VisionEncoder
    from vlpeft.pretrain.run import read_corpus
    from vlpeft.pretrain.text import build_gpt2, build_roberta
    from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer
    from vlpeft.pretrain.vit import build_image_processor, build_vit

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tracking_backbones")
    cfg = PretrainConfig(
        width=16, layers=1, heads=2, ffn=32,
        vit=VitPretrainConfig(image_size=32, patch_size=16), text=TextPretrainConfig(max_positions=40),
    )  # fmt: skip
    tok = train_word_tokenizer(read_corpus(Path(tiny_world)))
    paths = {name: root / name for name in ("vit", "roberta", "gpt2", "features")}
    build_vit(cfg).save_pretrained(paths["vit"])
    build_image_processor(cfg).save_pretrained(paths["vit"])
    for name, build in (("roberta", build_roberta), ("gpt2", build_gpt2)):
        wrapped = wrap_tokenizer(tok, name)
        build(cfg, wrapped).save_pretrained(paths[name])
        wrapped.save_pretrained(paths[name])
    extract_features(
        VisionEncoder.from_pretrained(str(paths["vit"])), image_table(tiny_world), paths["features"]
    )
    return paths


@pytest.fixture(scope="session")
def trained_models(tiny_world, tiny_backbones, tmp_path_factory) -> dict[str, Path]:
    """Real tiny models trained by ``train_task``: ``vqa_none`` (1 epoch), ``vqa_mul`` (2 epochs, ``mul``
    routing) and ``caption`` (1 epoch, ``vl``; test scoring skipped: METEOR's JVM costs ~10 s).

    Each value is the run's out dir: ``best/`` (a save_vl_model dir), ``metrics.json``, ``curves.json``.
    """
    from vlpeft.config import params_from_dict
    from vlpeft.train.run import train_task

    root = tmp_path_factory.mktemp("trained")
    train = {"batch_size": 16, "seed": 3, "lr": 1e-2, "peft": {"rank": 4, "alpha": 4.0}}
    base = {
        "model": {k: str(tiny_backbones[v]) for k, v in
                  (("vision", "vit"), ("vqa_backbone", "roberta"), ("caption_backbone", "gpt2"))},
        "evaluate": {"batch_size": 16, "max_new_tokens": 6, "spice": "off"},
        "data": {"max_caption_tokens": 12},
    }  # fmt: skip
    runs = (
        ("vqa_none", "vqa", {"epochs": 1, "peft": {**train["peft"], "routing": "none"}}),
        ("vqa_mul", "vqa", {"epochs": 2, "peft": {**train["peft"], "routing": "mul"}}),
        (
            "caption",
            "caption",
            {"epochs": 1, "val_cider_images": 0, "peft": {**train["peft"], "routing": "vl"}},
        ),
    )
    out = {}
    for key, task, section in runs:
        params = params_from_dict({**base, task: {**train, **section}}, "tracking test params")
        out[key] = root / key
        train_task(params, task, tiny_world, tiny_backbones["features"], out[key], progress=False,
                   evaluate_test=task == "vqa")  # fmt: skip
    return out
