"""The whole pipeline, pod-faithful, under ``kfp.local`` on the tiny world equals the same params run through
the DVC stages' commands: same seed, CPU, one thread -> equal numbers (and a registered challenger).

Pod-faithful (pipelines/local.py): each task gets only the environment its compiled platform spec gives its
pod: the Secrets it names (here a no-auth MLflow key map and the Optuna URL), its run id from the pod label,
KUBERNETES_SERVICE_HOST, so ``open_task``'s in-cluster checks run. Compiled for the oldest backend (2.4.0:
the checkpoints go to a PVC the run creates and deletes), GPU tasks allowed on CPU (no CUDA here).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from vlpeft.config import params_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.filterwarnings("ignore")]


def tiny_params(backbones: dict[str, Path]) -> dict:
    """One task (VQA), two variants, two sweep trials on two workers: the smallest whole pipeline."""
    return {
        "world": {"image_size": 32, "n_train": 24, "n_val": 8, "n_test": 8, "corpus_scenes": 30},
        "model": {
            "vision": str(backbones["vit"]),
            "vqa_backbone": str(backbones["roberta"]),
            "caption_backbone": str(backbones["gpt2"]),
        },
        "features": {"batch_size": 64},
        "vqa": {"epochs": 2, "batch_size": 16, "peft": {"rank": 4, "alpha": 4.0}},
        "evaluate": {"batch_size": 16, "spice": "off"},
        "sweep": {
            "tasks": ["vqa"],
            "n_trials": 2,
            "epochs": 1,
            "routing": ["none", "mul"],
            "rank": [2],
            "threads_per_worker": 1,
            "pruner": "none",
            "workers": 2,
        },
        "variants": {"best": {}, "blind": {"task.peft.routing": "none", "model.visual_prefix": False}},
        "seeds": [0],
        "registry": {"review_samples": 0},
        "kfp": {
            "sweep_workers": 2,
            "backend": "2.4.0",
            "allow_cpu": True,
            "mlflow_secret_keys": {"tracking_uri": "MLFLOW_TRACKING_URI"},  # an MLflow without auth
        },
    }


def _cli_reference(params_file: Path, work: Path, monkeypatch) -> dict:
    """The DVC stages' commands, in dvc.yaml's order, on the same params."""
    from vlpeft.cli import main

    monkeypatch.setenv("VLPEFT_SWEEP_STORAGE", f"journal:{work / 'sweep.journal'}")
    p = ["--params", str(params_file)]
    assert main(["data", "synth", "--out", str(work / "data"), *p]) == 0
    assert main(["features", "--data", str(work / "data"), "--out", str(work / "features"), *p]) == 0
    sweep = ["--task", "vqa", "--data", str(work / "data"), "--features", str(work / "features")]
    with_storage = ["-S", f"sweep.storage=journal:{work / 'sweep.journal'}"]
    assert main(["sweep", *sweep, "--out", str(work / "sweep"), *p, *with_storage]) == 0
    for variant in ("best", "blind"):
        run = f"vqa-{variant}-0"
        assert main(["train", "--task", "vqa", "--variant", variant, "--seed", "0", "--sweep-best",
                     str(work / "sweep" / "best_params.json"), "--data", str(work / "data"), "--features",
                     str(work / "features"), "--out", str(work / "train" / run), "--headline",
                     str(work / "metrics" / f"{run}.json"), *p]) == 0  # fmt: skip
    assert main(["report", "--metrics", str(work / "metrics"), "--runs", str(work / "train"), "--out-json",
                 str(work / "summary.json"), "--out-md", str(work / "summary.md")]) == 0  # fmt: skip
    return json.loads((work / "summary.json").read_text())


def test_kfp_local_pipeline_equals_the_cli_stages(tiny_backbones, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipelines.compile import run_local

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # every kfp.local task is a fresh process with one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    raw = tiny_params(tiny_backbones)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    try:
        reference = _cli_reference(params_file, tmp_path / "cli", monkeypatch)
    finally:
        torch.set_num_threads(threads)

    # The pipeline: its sweep workers share a journal file (kfp.local tasks share this disk), MLflow in a
    # sqlite file: both reach the tasks only as the values of the Secrets their pods name.
    monkeypatch.delenv("VLPEFT_SWEEP_STORAGE")
    secrets = {"vlpeft-mlflow": {"tracking_uri": os.environ["MLFLOW_TRACKING_URI"]},
               "vlpeft-optuna": {"url": f"journal:{tmp_path / 'kfp-sweep.journal'}"}}  # fmt: skip
    params = params_from_dict(raw)
    run_local(params, tmp_path / "kfp" / "root", tmp_path / "kfp" / "workspace", secrets=secrets)
    (summary_file,) = (tmp_path / "kfp" / "root").glob("*/summary/data/summary.json")
    pipeline = json.loads(summary_file.read_text())
    assert pipeline == reference  # every mean, std and gain of every variant, to the last digit
    assert set(pipeline["vqa"]["rows"]) == {"best", "blind", "best/shuffled"}  # + the shuffled-image control

    (best_file,) = (tmp_path / "kfp" / "root").glob("*/sweep-finish/best/best_params.json")
    assert json.loads(best_file.read_text()) == json.loads(
        (tmp_path / "cli/sweep/best_params.json").read_text()
    )
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("vlpeft-vqa", "challenger")
    tags = version.tags
    assert tags["kfp_task"] == "register" and tags["kfp_run_id"] not in ("", "unknown")  # from the pod label
    assert tags["kfp_input_model"].endswith("/train/model") and tags["image"] == params.kfp.image
    assert tags["data_version"] != "unknown" and tags.get("train_run_id")
    train_run = client.get_run(tags["train_run_id"])
    assert train_run.data.tags["kfp_task"].startswith("train") and train_run.data.tags["variant"] == "best"


def test_a_task_without_the_secret_its_pod_needs_fails_here_as_on_a_cluster(tmp_path, monkeypatch, capfd):
    """kfp.local alone hands every task this process's environment; the pod-faithful run gives a task only
    its pod's. The data task tracks: without the MLflow Secret its pod never starts (the kubelet's
    CreateContainerConfigError), nor with a Secret lacking a mapped key, and with an empty tracking URI
    ``open_task`` refuses to track into pod-local files. The run stops at that first task."""
    from pipelines.compile import run_local

    monkeypatch.chdir(tmp_path)
    world = {"image_size": 32, "n_train": 8, "n_val": 4, "n_test": 4}
    keys = {"tracking_uri": "MLFLOW_TRACKING_URI"}
    params = params_from_dict({"world": world, "kfp": {"mlflow_secret_keys": keys}})
    optuna = {"vlpeft-optuna": {"url": "journal:x"}}
    cases = [
        (optuna, 'secret "vlpeft-mlflow" not found'),
        (
            {**optuna, "vlpeft-mlflow": {"username": "u"}},
            "couldn't find key tracking_uri in Secret vlpeft-mlflow",
        ),
        (
            {**optuna, "vlpeft-mlflow": {"tracking_uri": ""}},
            "tracking.enabled but MLFLOW_TRACKING_URI is not set",
        ),
    ]
    for i, (secrets, line) in enumerate(cases):
        root = tmp_path / f"root{i}"
        with pytest.raises(RuntimeError):
            run_local(params, root, tmp_path / f"ws{i}", secrets=secrets)
        assert line in capfd.readouterr().out
        assert not list(root.glob("*/features"))
