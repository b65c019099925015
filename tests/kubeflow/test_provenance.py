"""The provenance source follows the environment: DVC in a checkout, Kubeflow inside a component's task."""

from __future__ import annotations

import json

from vlpeft.kfp_task import open_task, parse_params
from vlpeft.tracking.provenance import DvcProvenance, KfpProvenance, provenance_source, provenance_tags


def test_dvc_outside_kubeflow_and_kfp_inside_a_task(tmp_path, monkeypatch):
    monkeypatch.delenv("VLPEFT_KFP_RUN_ID", raising=False)
    assert isinstance(provenance_source(tmp_path), DvcProvenance)
    assert provenance_tags("train@vqa", tmp_path)["dvc_data_hash"] == "unknown"  # no dvc.lock here

    inputs = {"data": "minio://b/run/data/data", "features": "minio://b/run/features/store", "spec": "x"}
    for key in (
        "VLPEFT_KFP_RUN_ID",
        "VLPEFT_KFP_TASK",
        "VLPEFT_IMAGE",
        "VLPEFT_KFP_INPUTS",
        "VLPEFT_KFP_OUTPUTS",
    ):
        monkeypatch.setenv(key, "")  # restored by monkeypatch after open_task sets them
    open_task("{}", run_id="run-42", task_name="train-3", image="reg/vlpeft:1", inputs=inputs,
              outputs={"model": "minio://b/run/train-3/model"})  # fmt: skip
    source = provenance_source(tmp_path)
    assert isinstance(source, KfpProvenance)
    tags = provenance_tags("train@vqa", tmp_path)
    assert (
        tags["kfp_run_id"] == "run-42" and tags["kfp_task"] == "train-3" and tags["image"] == "reg/vlpeft:1"
    )
    assert (
        tags["kfp_input_data"] == inputs["data"] and tags["kfp_output_model"] == "minio://b/run/train-3/model"
    )
    assert "dvc_data_hash" not in tags
    # The data version is a digest of the data/features/models input URIs only (not of other inputs).
    other = KfpProvenance({"VLPEFT_KFP_INPUTS": json.dumps({**inputs, "spec": "y"})})
    moved = KfpProvenance({"VLPEFT_KFP_INPUTS": json.dumps({**inputs, "data": "minio://b/run2/data/data"})})
    assert source.data_version() == other.data_version() != moved.data_version()
    assert "kfp_output_model" not in source.version_tags()


def test_a_cluster_task_refuses_pod_local_tracking(monkeypatch):
    import pytest

    from vlpeft.errors import ConfigError

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VLPEFT_SWEEP_STORAGE", raising=False)
    for key in (
        "VLPEFT_KFP_RUN_ID",
        "VLPEFT_KFP_TASK",
        "VLPEFT_IMAGE",
        "VLPEFT_KFP_INPUTS",
        "VLPEFT_KFP_OUTPUTS",
    ):
        monkeypatch.setenv(key, "")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        open_task("{}", run_id="r", task_name="train", image="i")
    off = '{"tracking": {"enabled": false}}'
    with pytest.raises(ConfigError, match="VLPEFT_SWEEP_STORAGE"):
        open_task(off, run_id="r", task_name="sweep-worker", image="i", needs_sweep_storage=True)
    assert parse_params(off).tracking.enabled is False
    with pytest.raises(ConfigError, match="params_yaml"):
        parse_params('{"vqa": {"epochs": 0}}')
    # a task that does not track (summary reads what train wrote) needs no MLflow Secret
    assert open_task("{}", task_name="summary", image="i", tracks=False).tracking.enabled


def test_run_id_from_the_pod_label_and_gpu_tasks_fail_fast_without_cuda(monkeypatch):
    import pytest
    import torch

    from vlpeft.errors import ConfigError
    from vlpeft.kfp_task import REQUIRE_CUDA_ENV, current_run_id

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("VLPEFT_KFP_RUN_ID", "3f9c-run")  # what the downward API gives the pod
    for key in ("VLPEFT_KFP_TASK", "VLPEFT_IMAGE", "VLPEFT_KFP_INPUTS", "VLPEFT_KFP_OUTPUTS"):
        monkeypatch.setenv(key, "")
    off = '{"tracking": {"enabled": false}}'
    open_task(off, task_name="features", image="i")
    assert current_run_id() == "3f9c-run"
    monkeypatch.setenv(REQUIRE_CUDA_ENV, "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine has no GPU either way
    with pytest.raises(ConfigError, match=r"task features: no usable CUDA device .* kfp\.allow_cpu"):
        open_task(off, task_name="features", image="i")
    monkeypatch.delenv(REQUIRE_CUDA_ENV)  # kfp.allow_cpu: the pipeline leaves the variable out
    open_task(off, task_name="features", image="i")


def test_real_scale_data_stays_on_the_volume(tmp_path, monkeypatch):
    """With a data volume the data task writes the prepared tree there (per run) and its artifact holds only
    a pointer, which every consumer resolves (components/data.py, vlpeft.kfp_task.resolve)."""
    from types import SimpleNamespace

    import components.data
    from vlpeft.kfp_task import VOLUME_POINTER, resolve

    monkeypatch.setenv("VLPEFT_KFP_RUN_ID", "run-7")
    for key in ("VLPEFT_KFP_TASK", "VLPEFT_IMAGE", "VLPEFT_KFP_INPUTS", "VLPEFT_KFP_OUTPUTS"):
        monkeypatch.setenv(key, "")
    art = SimpleNamespace(path=str(tmp_path / "artifact"), uri="minio://b/data", metadata={})
    world = (
        '{"world": {"image_size": 32, "n_train": 8, "n_val": 4, "n_test": 4}, "tracking": {"enabled": false}}'
    )
    components.data.data(world, raw_dir="", volume_dir=str(tmp_path / "volume"), image="i", task_name="data",
                         data=art)  # fmt: skip
    assert [p.name for p in (tmp_path / "artifact").iterdir()] == [VOLUME_POINTER]
    on_volume = tmp_path / "volume" / "run-7" / "data"
    assert resolve(art.path) == str(on_volume) and (on_volume / "images").is_dir()
    assert art.metadata["counts"]
