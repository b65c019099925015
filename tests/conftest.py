"""Test-wide settings: no network, tracking in temp dirs, few threads (CI has 2 cores)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from torch seed 0: its random inputs do not depend on which tests ran before it, so a
    tolerance that holds once holds on every run and a failure reproduces with ``pytest -k`` alone."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _mlflow_in_tmp(tmp_path, monkeypatch):
    """MLflow's default store is ./mlflow.db: keep every test's tracking data in its own temp dir."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A tiny synthetic world (32 px; 24/8/8 images, 4 questions, 5 captions each), made once per session.

    Returns the data root (the contract layout of `vlpeft data synth`). Treat it as read-only.
    """
    from vlpeft.config import WorldConfig
    from vlpeft.data.synth import generate_world

    root = tmp_path_factory.mktemp("tiny_world") / "synthetic"
    cfg = WorldConfig(image_size=32, n_train=24, n_val=8, n_test=8, corpus_scenes=30)
    generate_world(cfg, root, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_backbones(tiny_world, tmp_path_factory):
    """Tiny pre-trained backbones of `tiny_world` (width 32, 2 layers, a few steps), made once per session.

    Returns {"vit", "roberta", "gpt2"} -> the model dirs written by `vlpeft pretrain` (HF `save_pretrained`
    format, with image processor / tokenizer). Treat them as read-only.
    """
    from vlpeft.config import params_from_dict
    from vlpeft.pretrain import pretrain_backbones

    params = params_from_dict(
        {
            "pretrain": {
                "width": 32,
                "layers": 2,
                "heads": 2,
                "ffn": 64,
                "vit": {"image_size": 32, "patch_size": 8, "epochs": 2, "batch_size": 8},
                "text": {"steps": 8, "batch_size": 16},
            }
        }
    )
    out = tmp_path_factory.mktemp("tiny_backbones")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, and 2 threads stall on a busy machine
    try:
        pretrain_backbones(params, tiny_world, out, out / "metrics.json", device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    return {part: out / part for part in ("vit", "roberta", "gpt2")}


@pytest.fixture
def small_disk(tmp_path):
    """``make(size, free)``: a real filesystem of ``size`` (a tmpfs, e.g. "256k") mounted under ``tmp_path``,
    filled until only ``free`` bytes are left; unmounted after the test. Full-disk behaviour is tested on a
    real full filesystem, not a simulated error; where mounting is not permitted the test is skipped."""
    import subprocess

    mounts = []

    def make(size: str = "256k", free: int = 0):
        mnt = tmp_path / f"disk{len(mounts)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(mnt)
        with open(mnt / "filler", "wb", buffering=0) as fh:  # whole pages while more than `free` is left
            try:
                while (st := os.statvfs(mnt)).f_bavail * st.f_frsize >= free + 4096:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        return mnt

    yield make
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
