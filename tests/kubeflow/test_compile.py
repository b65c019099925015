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
PVC_TASKS = ("exec-createpvc", "exec-deletepvc")  # kfp-kubernetes CreatePVC/DeletePVC (backend < 2.14)


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
    assert bases == {f"exec-{n.replace('_', '-')}" for n in vars(components.build(IMAGE))} | set(PVC_TASKS)
    for name, ex in executors.items():
        if name in PVC_TASKS:
            continue
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
        if label is None or label in PVC_TASKS:
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
        tracks = not label.startswith(("exec-collect", "exec-summary", *PVC_TASKS))
        assert ("vlpeft-mlflow" in names) == tracks, label
        assert ("vlpeft-optuna" in names) == label.startswith("exec-sweep"), label
        for s in k8s.get("secretAsEnv", []):
            assert s["secretNameParameter"] == {"runtimeValue": {"constant": s["secretName"]}}
    text = out.read_text()
    assert "MLFLOW_TRACKING_PASSWORD" in text  # the env var mapping, never a value
    # A storage URL with a password in params is refused before anything compiles.
    from vlpeft.errors import ConfigError

    bad = load_params(["params.yaml"], ["sweep.storage=postgresql://u:s3cret@db:5432/optuna"])
    with pytest.raises(ConfigError, match=r"sweep\.storage: has a password"):
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
        if label in PVC_TASKS:
            continue
        gpu = label.removeprefix("exec-").startswith(GPU_PREFIXES)
        assert ("retryPolicy" in task) == gpu, name
        if gpu:  # the retry window is the param's (the SDK's default of 1 h would end a long train's retries)
            assert task["retryPolicy"]["maxRetryCount"] == params.kfp.retries
            assert task["retryPolicy"]["backoffMaxDuration"] == "604800s" == f"{168 * 3600}s"
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
    params = load_params(["params.yaml", config], [f"sweep.tasks=[{task}]", "kfp.data_pvc=coco"])
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


# ----------------------------------------------------------------------------------- issue 19


def test_the_dag_has_the_shape_of_dvc_yaml(compiled):
    """One scoring path: the same stages as dvc.yaml (no separate evaluate; train scores its test split)."""
    _, _, spec, _ = compiled
    stage_of = {"data": "data", "pretrain": "pretrain", "features": "features", "sweep-prepare": "sweep",
                "sweep-worker": "sweep", "sweep-finish": "sweep", "train": "train", "collect-run": "summary",
                "summary": "summary", "register": "register", "review": "register"}  # fmt: skip
    labels = {re.sub(r"-\d+$", "", n).removeprefix("exec-") for n in spec["deploymentSpec"]["executors"]}
    kfp_stages = {stage_of[name] for name in labels if f"exec-{name}" not in PVC_TASKS}
    dvc_stages = set(yaml.safe_load(Path("dvc.yaml").read_text())["stages"])
    assert kfp_stages == dvc_stages


def test_no_provenance_in_cache_keys_and_run_id_from_the_pod_label(compiled):
    """The run id is no task input (the driver hashes resolved inputs into the cache key): every pod gets it
    from its ``pipeline/runid`` label instead."""
    _, out, spec, platform = compiled
    assert "pipeline_job_uuid" not in out.read_text()
    for _, name, task in _tasks(spec):
        params = task.get("inputs", {}).get("parameters", {})
        assert "run_id" not in params, name
    for label, k8s in platform.items():
        if label in PVC_TASKS:
            continue
        assert k8s["fieldPathAsEnv"] == [
            {"fieldPath": "metadata.labels['pipeline/runid']", "name": "VLPEFT_KFP_RUN_ID"}
        ], label


def _compile(tmp_path, *sets, name="p.yaml"):
    params = load_params(["params.yaml"], list(sets))
    out = compile_pipeline(params, tmp_path / name, IMAGE)
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]


def test_workspace_per_backend(tmp_path):
    """>= 2.14: the run workspace with accessModes; older: a PVC the run creates and deletes; or an existing
    PVC on any backend."""
    _, new = _compile(tmp_path, "kfp.backend=2.15.0", "kfp.workspace_storage_class=rwx")
    assert new["pipelineConfig"]["workspace"]["kubernetes"]["pvcSpecPatch"] == {
        "accessModes": ["ReadWriteMany"], "storageClassName": "rwx"}  # fmt: skip
    assert "pvcMount" not in new["deploymentSpec"]["executors"]["exec-train"]
    spec, old = _compile(tmp_path, "kfp.backend=2.5.0", "kfp.workspace_access_modes=[ReadWriteOnce]")
    assert "pipelineConfig" not in old  # 2.5.0's PipelineConfig has no workspace: it would drop everything
    inputs = spec["root"]["dag"]["tasks"]["createpvc"]["inputs"]["parameters"]
    create = {k: v["runtimeValue"]["constant"] for k, v in inputs.items()}
    assert create == {
        "access_modes": ["ReadWriteOnce"],
        "size": "20Gi",
        "pvc_name_suffix": "-vlpeft-workspace",
    }
    assert spec["deploymentSpec"]["executors"]["exec-createpvc"]["container"]["image"] == "argostub/createpvc"
    mount = old["deploymentSpec"]["executors"]["exec-train"]["pvcMount"][0]
    assert (
        mount["mountPath"] == "/mnt/workspace" and mount["taskOutputParameter"]["producerTask"] == "createpvc"
    )
    delete = spec["root"]["dag"]["tasks"]["deletepvc"]
    trains = {n for _, n, _ in _tasks(spec) if n.startswith("train")}
    assert set(delete["dependentTasks"]) >= trains
    _, existing = _compile(tmp_path, "kfp.backend=2.4.0", "kfp.workspace_pvc=ckpt")
    assert existing["deploymentSpec"]["executors"]["exec-train"]["pvcMount"][0]["constant"] == "ckpt"
    assert "createpvc" not in _compile(tmp_path, "kfp.workspace_pvc=ckpt")[0]["root"]["dag"]["tasks"]


def test_cluster_settings_reach_the_pods(tmp_path):
    spec, k8s = _compile(
        tmp_path, "kfp.backend=2.17.0", "kfp.image_pull_secrets=[regcred]", "kfp.train.timeout=7200",
        "kfp.run_timeout=86400", "kfp.run_ttl=3600", "kfp.hf_cache_pvc=hub", "kfp.hf_secret=hf",
        'kfp.mlflow_secret_keys={"token": "MLFLOW_TRACKING_TOKEN", "uri": "MLFLOW_TRACKING_URI"}',
    )  # fmt: skip
    ex = k8s["deploymentSpec"]["executors"]
    assert ex["exec-train"]["imagePullSecret"][0]["secretName"] == "regcred"
    assert ex["exec-summary"]["imagePullSecret"][0]["secretName"] == "regcred"
    assert (
        ex["exec-train"]["activeDeadlineSeconds"] == "7200" and "activeDeadlineSeconds" not in ex["exec-data"]
    )
    assert k8s["pipelineConfig"]["activeDeadlineSeconds"] == 86400
    assert k8s["pipelineConfig"]["resourceTtlOnCompletion"] == 3600
    assert {m["constant"] for m in ex["exec-train"]["pvcMount"]} == {"hub"}
    mlflow = next(s for s in ex["exec-train"]["secretAsEnv"] if s["secretName"] == "vlpeft-mlflow")
    assert {p["secretKey"]: p["envVar"] for p in mlflow["keyToEnv"]} == {
        "token": "MLFLOW_TRACKING_TOKEN", "uri": "MLFLOW_TRACKING_URI"}  # fmt: skip
    assert any(s["secretName"] == "hf" for s in ex["exec-features"]["secretAsEnv"])
    env = {
        e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"]["exec-train"]["container"]["env"]
    }
    assert env == {"HF_HOME": "/mnt/hf", "VLPEFT_REQUIRE_CUDA": "1"}  # fail fast without CUDA
    _compile(tmp_path, "kfp.allow_cpu=true", name="cpu.yaml")
    spec_cpu = next(yaml.safe_load_all((tmp_path / "cpu.yaml").read_text()))
    assert "env" not in spec_cpu["deploymentSpec"]["executors"]["exec-train"]["container"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["kfp.run_ttl=60"], "kfp.run_ttl: needs kfp.backend >= 2.17.0"),
        (["kfp.backend=2.9.0"], "kfp.backend '2.9.0': not a supported KFP backend"),
        (["data.source=coco"], "data.source coco: set kfp.data_pvc"),
        (["model.vision=https://me:hunter2@hub.example/vit"], "model.vision: has a password"),
        (['variants={"best": {"tracking.experiment": "postgresql://u:pw@db/x"}}'], "variants.best.tracking"),
        (["sweep.storage=postgresql://u:s3cret@db:5432/optuna"], "sweep.storage: has a password"),
        (["kfp.image=vlpeft:0.1.0"], "kfp.image 'vlpeft:0.1.0': name the registry"),
        (["kfp.image_pull_secrets=[Bad_Name]"], "image_pull_secrets[0]"),
        (['kfp.mlflow_secret_keys={"user": "MLFLOW_TRACKING_USERNAME"}'], "MLFLOW_TRACKING_URI"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(sets, message, tmp_path, capsys):
    from vlpeft.cli import main

    out = tmp_path / "p.yaml"
    image = [] if any(s.startswith("kfp.image=") for s in sets) else ["--image", IMAGE]
    args = ["kfp", "compile", "--out", str(out), *image]
    for s in sets:
        args += ["-S", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert "hunter2" not in err and "s3cret" not in err


def test_real_scale_data_lives_on_the_data_volume(tmp_path):
    spec, k8s = _compile(tmp_path, "data.source=coco", "kfp.data_pvc=coco", "kfp.backend=2.17.0")
    ex = k8s["deploymentSpec"]["executors"]
    for label in ("exec-data", "exec-features", "exec-train", "exec-sweep-worker", "exec-register"):
        assert {"constant": "coco", "mountPath": "/mnt/data"}.items() <= ex[label]["pvcMount"][0].items(), (
            label
        )
    data = spec["root"]["dag"]["tasks"]["data"]["inputs"]["parameters"]
    assert data["volume_dir"]["runtimeValue"]["constant"] == "/mnt/data/vlpeft/runs"
    assert data["raw_dir"]["runtimeValue"]["constant"] == "/mnt/data/raw"
