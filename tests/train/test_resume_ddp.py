"""Real processes: SIGKILL (self-inflicted at a known step, and from outside at any instant) + ``--resume`` is
bitwise an uninterrupted run; torchrun DDP (gloo, 2 processes) equals one process with the same global batch,
for the toy model and for the real VQA task."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("toy_trainer.py")


def run(*args: str, torchrun: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parent)}
    if torchrun:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={torchrun}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(SCRIPT),
            *args,
        ]
    else:
        cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def run_here(*args: str) -> None:
    """The same script in this process (saves a process start-up; the script sets 1 torch thread)."""
    import toy_trainer

    threads = torch.get_num_threads()
    try:
        assert toy_trainer.main(list(args)) == 0
    finally:
        torch.set_num_threads(threads)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "last" / "trainer" / "weights.safetensors"))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    run_here(str(tmp_path / "full"))
    killed = run(str(tmp_path / "crash"), "--kill-at", "11")  # epoch 2 of 3, checkpoints every 3 steps
    assert killed.returncode == -signal.SIGKILL
    state = json.loads((tmp_path / "crash" / "last" / "trainer" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["global_step"]) == (1, 2, 9)
    resumed = run(str(tmp_path / "crash"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr
    a, b = weights(tmp_path / "full"), weights(tmp_path / "crash")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "curves.json").read_text() == (tmp_path / "crash" / "curves.json").read_text()
    best_a = load_file(str(tmp_path / "full" / "best" / "weights.safetensors"))
    best_b = load_file(str(tmp_path / "crash" / "best" / "weights.safetensors"))
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


@pytest.mark.slow
def test_torchrun_two_processes_equals_one_process(tmp_path):
    """Global batch 8: 1 process × 2 micro-batches vs 2 gloo ranks × 2 micro-batches; the 50-sample epoch ends
    in a batch of 2, so one rank gets an empty share (weight-0 dummy sample) on the last step."""
    common = ["--dropout", "0", "--accum", "2", "--checkpoint-every", "0"]
    run_here(str(tmp_path / "one"), *common)
    two = run(str(tmp_path / "two"), *common, torchrun=2)
    assert two.returncode == 0, two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ca = json.loads((tmp_path / "one" / "curves.json").read_text())
    cb = json.loads((tmp_path / "two" / "curves.json").read_text())
    assert [c["epoch"] for c in cb] == [1, 2, 3]
    for x, y in zip(ca, cb, strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
        assert y["val_loss"] == pytest.approx(x["val_loss"], rel=1e-4)
    # Only rank 0 wrote: no stray files from rank 1.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best", "curves.json", "last"]


def _state(out: Path) -> dict | None:
    from vlpeft.io import partial_path

    try:  # `vlpeft train` builds in .<out>.partial until it completes
        return json.loads((partial_path(out) / "last" / "trainer" / "state.json").read_text())
    except (OSError, ValueError):  # not written yet, or being swapped in right now
        return None


@pytest.mark.slow
def test_cli_train_sigkilled_from_outside_resumes_to_the_same_result(tiny_world, train_backbones, tmp_path):
    """``vlpeft train`` killed by another process at whatever instant (maybe mid-write), then ``--resume``."""
    import time

    import yaml
    from conftest import tiny_params_dict

    data = tiny_params_dict(train_backbones)
    data["tracking"] = {"enabled": True, "experiment": "killed"}  # a real sqlite store: the run left RUNNING
    data["vqa"]["checkpoint_every"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MLFLOW_TRACKING_URI": uri}

    def cmd(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "vlpeft", "train", "--task", "vqa", "--data", str(tiny_world),
                "--features", str(train_backbones["features"]), "--out", str(out),
                "--params", str(tmp_path / "params.yaml"), "--no-test", *extra]  # fmt: skip

    # The uninterrupted reference runs in this process (same thread count as the subprocesses).
    from vlpeft.config import params_from_dict
    from vlpeft.train.run import train_task

    assert torch.get_num_threads() == 2
    train_task(params_from_dict(data), "vqa", tiny_world, train_backbones["features"], tmp_path / "full",
               evaluate_test=False, progress=False)  # fmt: skip
    proc = subprocess.Popen(
        cmd(tmp_path / "crash"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        state = _state(tmp_path / "crash")
        if state and state["global_step"] >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "crash" / "metrics.json").exists()
    resumed = subprocess.run(cmd(tmp_path / "crash", "--resume"), capture_output=True, text=True, env=env,
                             timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "full"), weights(tmp_path / "crash")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "curves.json").read_text() == (tmp_path / "crash" / "curves.json").read_text()
    ma = json.loads((tmp_path / "full" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "crash" / "metrics.json").read_text())
    assert ma["val"] == mb["val"] and ma["train"]["final_loss"] == mb["train"]["final_loss"]
    # The killed process could not end its MLflow run: the resumed one ends it as KILLED and links the two.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("killed").experiment_id
    runs = client.search_runs([experiment], order_by=["start_time"])
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    killed, resumed_run = runs
    assert killed.data.tags["resumed_by"] == resumed_run.info.run_id
    assert resumed_run.data.tags["resumed_from"] == killed.info.run_id


@pytest.mark.slow
def test_vqa_task_under_torchrun_matches_one_process(tiny_world, train_backbones, tmp_path):
    """``torchrun --nproc_per_node 2 -m vlpeft train`` (gloo) on the real VQA model == one process."""
    import yaml
    from conftest import tiny_params_dict

    from vlpeft.config import params_from_dict
    from vlpeft.train.run import train_task

    data = tiny_params_dict(train_backbones)
    data["tracking"] = {"enabled": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    train_task(params_from_dict(data), "vqa", tiny_world, train_backbones["features"], tmp_path / "one",
               evaluate_test=False, progress=False)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "vlpeft", "train", "--task", "vqa", "--data", str(tiny_world),
           "--features", str(train_backbones["features"]), "--out", str(tmp_path / "two"),
           "--params", str(tmp_path / "params.yaml"), "--no-test"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ca = json.loads((tmp_path / "one" / "curves.json").read_text())
    cb = json.loads((tmp_path / "two" / "curves.json").read_text())
    for x, y in zip(ca, cb, strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
        assert y["val_loss"] == pytest.approx(x["val_loss"], rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        ".vlpeft-complete",  # published whole (vlpeft.train.run)
        "best",
        "curves.json",
        "last",
        "metrics.json",
    ]
