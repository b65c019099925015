"""Compile checks on the pipeline YAML (no cluster): image, GPUs, Secrets, parallelism, retries, caching."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import components
from pipelines.compile import compile_pipeline, disable_caching
from vlpeft.config import load_params

IMAGE = "registry.example/vlpeft/vlpeft:0.1.0"
GPU_PREFIXES = ("features", "sweep-worker", "train", "pretrain")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    params = load_params(["params.yaml"], ["kfp.sweep_workers=3", "kfp.train.gpus=2"])
    out = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    compile_pipeline(params, out, IMAGE)
    spec, platform = yaml.safe_load_all(out.read_text())
    return params, out, spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec):
    """(dag name, task name, task) of every task of every DAG."""
    dags = {"root": spec["root"]["dag"]} | {n: c["dag"] for n, c in spec["components"].items() if "dag" in c}
    return [(d, n, t) for d, dag in dags.items() for n, t in dag["tasks"].items()]


def _executor(spec, task):
    """The executor label of a task that runs a container (None for a nested DAG)."""
    return spec["components"][task["componentRef"]["name"]].get("executorLabel")


def test_every_task_runs_its_component_in_our_image_without_pip(compiled):
    _, _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    bases = {re.sub(r"-\d+$", "", name) for name in executors}
    assert bases == {f"exec-{n.replace('_', '-')}" for n in vars(components.build(IMAGE))}
    for name, ex in executors.items():
        c = ex["container"]
        assert c["image"] == IMAGE, name
        text = " ".join(c["command"] + c.get("args", []))
        assert "pip install" not in text and "kfp.dsl.executor_main" in text, name
        assert "from vlpeft import stages" in text, name  # a thin wrapper over the stage function


def test_gpu_settings_exactly_on_gpu_tasks(compiled):
    params, _, spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    seen_gpu = set()
    for _, _name, task in _tasks(spec):
        label = _executor(spec, task)
        if label is None:
            continue
        resources = executors[label]["container"].get("resources", {})
        k8s = platform.get(label, {})
        gpu = label.removeprefix("exec-").startswith(GPU_PREFIXES)
        if gpu:
            seen_gpu.add(label)
            kind = "train" if label.startswith(("exec-train", "exec-pretrain")) else label.split("-")[1]
            want = getattr(params.kfp, kind if kind != "worker" else "sweep")
            want = params.kfp.sweep if "sweep" in label else want
            acc = resources["accelerator"]
            assert (acc["resourceType"], acc["resourceCount"]) == ("nvidia.com/gpu", str(want.gpus)), label
            assert k8s["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}, label
            assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                           "effect": "NoSchedule"}], label  # fmt: skip
            assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm", label
            assert resources["resourceCpuRequest"] == want.cpu and resources["resourceMemoryRequest"]
        else:
            assert "accelerator" not in resources, label
            assert "nodeSelector" not in k8s and "tolerations" not in k8s, label
    assert {"exec-train", "exec-features", "exec-sweep-worker", "exec-pretrain"} <= seen_gpu
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceCount"] == "2"


def test_secrets_by_literal_name_and_no_secret_value(compiled, monkeypatch):
    _, out, _, platform = compiled
    for label, k8s in platform.items():
        names = {s["secretName"] for s in k8s.get("secretAsEnv", [])}
        tracks = not label.startswith(("exec-evaluate", "exec-collect", "exec-summary"))
        assert ("vlpeft-mlflow" in names) == tracks, label
        assert ("vlpeft-optuna" in names) == label.startswith("exec-sweep"), label
        for s in k8s.get("secretAsEnv", []):
            assert s["secretNameParameter"] == {"runtimeValue": {"constant": s["secretName"]}}
    text = out.read_text()
    assert "MLFLOW_TRACKING_PASSWORD" in text  # the env var mapping, never a value
    # A storage URL with a password in params is refused before anything compiles.
    from vlpeft.errors import ConfigError

    bad = load_params(["params.yaml"], ["sweep.storage=postgresql://u:s3cret@db:5432/optuna"])
    with pytest.raises(ConfigError, match="password"):
        compile_pipeline(bad, out.with_name("bad.yaml"), IMAGE)
    assert not out.with_name("bad.yaml").exists()


def test_sweep_loop_parallelism_retries_and_caching(compiled):
    params, _, spec, _ = compiled
    loops = [t for _, n, t in _tasks(spec) if "iteratorPolicy" in t]
    assert len(loops) == len(params.sweep.tasks)
    assert all(t["iteratorPolicy"]["parallelismLimit"] == 3 for t in loops)
    for dag, name, task in _tasks(spec):
        if "componentRef" not in task or "executorLabel" not in spec["components"].get(
            task["componentRef"]["name"], {}
        ):
            continue
        label = _executor(spec, task)
        gpu = label.removeprefix("exec-").startswith(GPU_PREFIXES)
        assert ("retryPolicy" in task) == gpu, name
        if gpu:
            assert task["retryPolicy"]["maxRetryCount"] == params.kfp.retries
        no_cache = label.startswith(("exec-sweep", "exec-register", "exec-review", "exec-train"))
        assert task["cachingOptions"].get("enableCache", False) is (not no_cache), (dag, name)


def test_variants_come_from_params(tmp_path):
    params = load_params(
        ["params.yaml"], ["seeds=[0,1]", 'variants={"best": {}, "mul": {"task.peft.routing": "mul"}}']
    )
    out = compile_pipeline(params, tmp_path / "p.yaml", IMAGE)
    spec = next(yaml.safe_load_all(out.read_text()))
    trains = [t for _, n, t in _tasks(spec) if n.startswith("train")]
    got = sorted(
        (t["inputs"]["parameters"]["task"]["runtimeValue"]["constant"],
         t["inputs"]["parameters"]["variant"]["runtimeValue"]["constant"],
         int(t["inputs"]["parameters"]["seed"]["runtimeValue"]["constant"])) for t in trains
    )  # fmt: skip
    variants = ("best", "norouting", "blind", "mul")  # the table's three plus the one added here
    assert got == sorted((t, v, s) for t in ("vqa", "caption") for v in variants for s in (0, 1))


def test_compile_is_deterministic_and_no_cache_reaches_nested_dags(compiled, tmp_path):
    params, out, spec, _ = compiled
    again = compile_pipeline(params, tmp_path / "again.yaml", IMAGE)
    assert again.read_text() == out.read_text()
    off = disable_caching(json.loads(json.dumps(spec)))
    nested = [t for d, _, t in _tasks(off) if d != "root"]
    assert nested and all(t["cachingOptions"] == {"enableCache": False} for _, _, t in _tasks(off))


PAPER = [("configs/paper-vqa-roberta.yaml", "vqa"), ("configs/paper-coco-gpt2.yaml", "caption")]


@pytest.mark.parametrize(("config", "task"), PAPER)
def test_paper_configs_compile(config, task, tmp_path):
    params = load_params(["params.yaml", config], [f"sweep.tasks=[{task}]"])
    out = compile_pipeline(params, tmp_path / "p.yaml", IMAGE)
    spec = next(yaml.safe_load_all(out.read_text()))
    names = {n for _, n, _ in _tasks(spec)}
    assert "pretrain" not in names  # hub backbones: nothing to pre-train
    assert {"data", "features", "summary", "sweep-prepare", "register"} <= names
    assert sorted(Path("configs").glob("paper-*.yaml")) == sorted(Path(c) for c, _ in PAPER)


def test_bad_params_are_one_line_before_compiling(tmp_path, capsys):
    from vlpeft.cli import main

    out = tmp_path / "p.yaml"
    assert main(["kfp", "compile", "--out", str(out), "-S", "kfp.mlflow_secret=Not_A_Name"]) == 2
    err = capsys.readouterr().err
    assert "kfp.mlflow_secret" in err and "Traceback" not in err and not out.exists()
    assert main(["kfp", "compile", "--out", str(out), "--image", "r.example/v:2"]) == 0
    assert "r.example/v:2" in out.read_text()


def test_the_registered_run_is_registry_variant_not_the_first_variant(tmp_path):
    """dvc.yaml and the pipeline register the same run: ``registry.variant``'s first seed (params.yaml)."""
    params = load_params(["params.yaml"], ["registry.variant=blind", "seeds=[3, 4]"])
    assert next(iter(params.variants)) != "blind"
    out = tmp_path / "pipeline.yaml"
    compile_pipeline(params, out, IMAGE)
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = {n: t for _, n, t in _tasks(spec)}
    registered = {}
    for task in tasks.values():
        if task["taskInfo"]["name"].startswith("register-"):
            producer = task["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"]
            registered[task["taskInfo"]["name"]] = tasks[producer]["taskInfo"]["name"]
    assert registered == {f"register-{t}": f"train-{t}-blind-3" for t in params.sweep.tasks}
