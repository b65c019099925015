"""A train task killed mid-training is retried by KFP (``set_retry``; kfp.local honours it) and the retry
resumes from the checkpoint on the run workspace: its results equal an uninterrupted run's.

(No ``from __future__ import annotations`` here: kfp reads the pipeline function's annotations as types.)
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from vlpeft.config import params_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.filterwarnings("ignore")]
RUN = "vqa-best-0"


def _train_processes() -> list[int]:
    """PIDs of kfp.local executor processes running the train component."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kfp.dsl.executor_main" in b" ".join(cmd) and b"train" in cmd:
            pids.append(int(entry.name))
    return pids


def _kill_after_first_checkpoint(workspace: Path, killed: dict) -> None:
    """Kill the train process (SIGKILL, like a preempted pod) once its first epoch's checkpoint exists."""
    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        # A run builds in .<out>.partial beside its output until it completes (vlpeft.train.run).
        for state in workspace.glob(f"train/*/.{RUN}.partial/last/trainer/state.json"):
            try:
                epoch = json.loads(state.read_text())["epoch"]
            except (OSError, ValueError, KeyError):
                continue
            for pid in _train_processes():
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, epoch=epoch)
            if killed:
                return
        time.sleep(0.02)


def test_killed_train_task_is_retried_and_resumes_from_its_checkpoint(
    tiny_world, tiny_backbones, tmp_path, monkeypatch
):
    from kfp import dsl, local

    import components
    from pipelines.compile import params_yaml_text
    from vlpeft import stages

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    raw = {
        "model": {"vision": str(tiny_backbones["vit"]), "vqa_backbone": str(tiny_backbones["roberta"])},
        "vqa": {"epochs": 4, "batch_size": 16, "peft": {"rank": 2, "alpha": 2.0}},
        "evaluate": {"batch_size": 16, "spice": "off"},
        "tracking": {"enabled": False},
    }
    params = params_from_dict(raw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stages.features(params, data=tiny_world, out=tmp_path / "features")
        best = tmp_path / "best"
        best.mkdir()
        (best / "best_params.json").write_text(json.dumps({"vqa": {"peft": {"routing": "mul", "rank": 2}}}))
        stages.train(params, "vqa", data=tiny_world, features=tmp_path / "features",
                     out=tmp_path / "straight", variant="best", seed=0,
                     sweep_best=best / "best_params.json")  # fmt: skip
    finally:
        torch.set_num_threads(threads)

    comps = components.build("registry.example/vlpeft:0.1.0")

    @dsl.pipeline(pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")))
    def retried(params_yaml: str):
        data = dsl.importer(artifact_uri=str(tiny_world), artifact_class=dsl.Dataset)
        store = dsl.importer(artifact_uri=str(tmp_path / "features"), artifact_class=dsl.Dataset)
        sweep = dsl.importer(artifact_uri=str(best), artifact_class=dsl.Artifact)
        task = comps.train(params_yaml=params_yaml, task="vqa", variant="best", seed=0, gpus=0,
                           checkpoints=dsl.WORKSPACE_PATH_PLACEHOLDER, image="registry.example/vlpeft:0.1.0",
                           run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                           task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                           data=data.output, store=store.output, best=sweep.output)  # fmt: skip
        task.set_retry(num_retries=1, backoff_duration="0s")

    workspace, root = tmp_path / "workspace", tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               workspace_root=str(workspace))  # fmt: skip
    killed: dict = {}
    watcher = threading.Thread(target=_kill_after_first_checkpoint, args=(workspace, killed), daemon=True)
    watcher.start()
    retried(params_yaml=params_yaml_text(params))
    watcher.join(timeout=5)

    assert killed and killed["epoch"] < 4, killed  # the first attempt died mid-training
    (out,) = root.glob("*/train/executor_output.json")
    meta = json.loads(out.read_text())["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert meta["resumed"] is True
    (model_dir,) = root.glob("*/train/model")
    straight = tmp_path / "straight"
    assert json.loads((model_dir / "curves.json").read_text()) == json.loads(
        (straight / "curves.json").read_text()
    )
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (model_dir, straight))
    assert got["test"] == want["test"] and got["val"] == want["val"]
