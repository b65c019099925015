"""The Kubeflow DAG: data -> pretrain (embedded world) -> features -> sweep -> train (scores its test split)
-> summary -> register -> review, built from the resolved params at compile time: the same shape as dvc.yaml.

Everything that decides the DAG's shape is read from params when the pipeline is compiled: the tasks
(``sweep.tasks``), the final runs (params' ``variants:`` table x ``seeds:``, the same table dvc.yaml's
matrix iterates: no variant is spelled here), the sweep-worker parallelism and all Kubernetes settings
(``kfp:``), for the oldest backend named by ``kfp.backend`` (``pipelines/backends.py``). Secrets are
referenced by their literal names; their values never enter params or the YAML.
"""

from dataclasses import dataclass

from kfp import dsl, kubernetes

import components
from pipelines.backends import Backend, backend

OPTUNA_KEYS = {"url": "VLPEFT_SWEEP_STORAGE"}
HF_KEYS = {"token": "HF_TOKEN"}
RUN_ID_ENV = "VLPEFT_KFP_RUN_ID"  # vlpeft.tracking.provenance.KFP_RUN_ENV
# The backend labels every pod of a run with its run id: backend/src/apiserver/template/v2_template.go
# (2.4.0 .. 2.17.0) `executionSpec.SetPodMetadataLabels(util.LabelKeyWorkflowRunId, ...)`, and
# backend/src/common/util/consts.go `LabelKeyWorkflowRunId = "pipeline/runid"`.
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"
REQUIRE_CUDA_ENV = "VLPEFT_REQUIRE_CUDA"  # vlpeft.kfp_task.REQUIRE_CUDA_ENV


@dataclass
class Volumes:
    """Where train checkpoints, prepared data and the hub cache live in the pods."""

    checkpoints: str  # the train tasks' ``checkpoints`` argument
    mount_workspace: object = None  # callable(task) mounting the checkpoint volume (None: the run workspace)
    data_dir: str = ""  # on the data volume: where data/features of each run go ("" = artifacts)


def gpu_task(task, kfp_cfg, kind: str):
    """Accelerators, node selector, tolerations, requests, /dev/shm, CUDA check and retries of a GPU task."""
    res = getattr(kfp_cfg, kind)
    task.set_cpu_request(res.cpu).set_memory_request(res.memory)
    if res.gpus > 0:
        task.set_accelerator_type(kfp_cfg.gpu_type).set_accelerator_limit(res.gpus)
        for key, value in kfp_cfg.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for tol in kfp_cfg.tolerations:
            kubernetes.add_toleration(
                task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect
            )
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=res.shm)  # fmt: skip
        if not kfp_cfg.allow_cpu:
            task.set_env_variable(REQUIRE_CUDA_ENV, "1")
    if kfp_cfg.retries:
        # Argo stops retrying `backoffMaxDuration` after the first attempt started and gives a retry pod
        # that same deadline (the SDK's default is 1 h: a long train would never be retried).
        task.set_retry(num_retries=kfp_cfg.retries, backoff_duration=kfp_cfg.retry_backoff,
                       backoff_factor=2.0, backoff_max_duration=kfp_cfg.retry_window)  # fmt: skip
    return _timeout(task, res)


def cpu_task(task, kfp_cfg):
    """Requests (and time limit) of a CPU task."""
    task.set_cpu_request(kfp_cfg.cpu_task.cpu).set_memory_request(kfp_cfg.cpu_task.memory)
    return _timeout(task, kfp_cfg.cpu_task)


def _timeout(task, res):
    if res.timeout:
        kubernetes.set_timeout(task, res.timeout)  # the pod's activeDeadlineSeconds
    return task


def pod(task, kfp_cfg, *, hub: bool = False, data_volume: bool = False):
    """What every pod gets: its run id from its label (not a task input, so cache keys stay the same
    across runs), image pull Secrets; ``hub``: the hub cache volume and token; ``data_volume``: the data
    PVC."""
    kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path=RUN_ID_FIELD)
    if kfp_cfg.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(kfp_cfg.image_pull_secrets))
    if hub and kfp_cfg.hf_cache_pvc:
        kubernetes.mount_pvc(task, pvc_name=kfp_cfg.hf_cache_pvc, mount_path=kfp_cfg.hf_cache_mount)
        task.set_env_variable("HF_HOME", kfp_cfg.hf_cache_mount)
    if hub and kfp_cfg.hf_secret:
        kubernetes.use_secret_as_env(task, secret_name=kfp_cfg.hf_secret, secret_key_to_env=HF_KEYS)
    if data_volume and kfp_cfg.data_pvc:
        kubernetes.mount_pvc(task, pvc_name=kfp_cfg.data_pvc, mount_path=kfp_cfg.data_mount)
    return task


def tracked(task, kfp_cfg, params):
    """The MLflow Secret as environment of a task that tracks (only when tracking is on)."""
    if params.tracking.enabled:
        kubernetes.use_secret_as_env(
            task, secret_name=kfp_cfg.mlflow_secret, secret_key_to_env=dict(kfp_cfg.mlflow_secret_keys)
        )
    return task


def study(task, kfp_cfg):
    """The Optuna database URL Secret of a sweep task."""
    kubernetes.use_secret_as_env(task, secret_name=kfp_cfg.optuna_secret, secret_key_to_env=OPTUNA_KEYS)
    return task.set_caching_options(False)  # its effect is in the database, not in its outputs


def check_supported(params, be: Backend) -> None:
    """Refuse settings the target backend would not apply, and real-scale data without a volume."""
    from vlpeft.errors import ConfigError

    kfp_cfg = params.kfp
    for field in ("run_timeout", "run_ttl"):
        if getattr(kfp_cfg, field) and not be.run_limits:
            raise ConfigError(
                f"kfp.{field}: needs kfp.backend >= 2.17.0 (PipelineConfig active_deadline_seconds / "
                f"resource_ttl_on_completion); kfp.backend is {be.version}"
            )
    if params.data.source == "coco" and not kfp_cfg.data_pvc:
        raise ConfigError(
            "data.source coco: set kfp.data_pvc (an existing PVC with the downloads in "
            "<kfp.data_mount>/raw): real-scale images, features and prepared data live on that volume, "
            "not in the artifact store"
        )


def pipeline_config(kfp_cfg, be: Backend) -> dsl.PipelineConfig:
    """The run workspace (backend >= 2.14 without kfp.workspace_pvc) and the run's deadline and TTL."""
    limits = {"active_deadline_seconds": kfp_cfg.run_timeout, "ttl_seconds_after_finished": kfp_cfg.run_ttl}
    limits = {k: v for k, v in limits.items() if v}
    if not be.workspace or kfp_cfg.workspace_pvc:
        return dsl.PipelineConfig(**limits)
    patch = {"accessModes": list(kfp_cfg.workspace_access_modes)}
    if kfp_cfg.workspace_storage_class:
        patch["storageClassName"] = kfp_cfg.workspace_storage_class
    workspace = dsl.WorkspaceConfig(
        size=kfp_cfg.workspace_size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch)
    )
    return dsl.PipelineConfig(workspace=workspace, **limits)


def checkpoint_volumes(kfp_cfg, be: Backend) -> tuple[Volumes, object]:
    """Where train checkpoints go; the second item creates the per-run PVC on a backend without a run
    workspace (returns ``(create task, delete factory)`` inside the pipeline), else None."""
    data_dir = f"{kfp_cfg.data_mount}/vlpeft/runs" if kfp_cfg.data_pvc else ""
    if kfp_cfg.workspace_pvc:

        def mount(task):
            kubernetes.mount_pvc(task, pvc_name=kfp_cfg.workspace_pvc, mount_path=kfp_cfg.workspace_mount)

        return Volumes(kfp_cfg.workspace_mount, mount, data_dir), None
    if be.workspace:
        return Volumes(dsl.WORKSPACE_PATH_PLACEHOLDER, None, data_dir), None
    return Volumes(kfp_cfg.workspace_mount, None, data_dir), True  # a PVC the run creates and deletes


def build_pipeline(params, params_yaml: str, image: str | None = None):
    """The ``@dsl.pipeline`` function for ``params`` (validated ``Params``; ``params_yaml``, their YAML text,
    goes to every task) running every task in ``image`` (default ``kfp.image``)."""
    from vlpeft.stages import uses_pretrain
    from vlpeft.variants import final_runs

    kfp_cfg = params.kfp
    be = backend(kfp_cfg.backend)
    check_supported(params, be)
    image = image or kfp_cfg.image
    comps = components.build(image)
    tasks = tuple(params.sweep.tasks)
    runs = final_runs(params, tasks)
    pretrained = uses_pretrain(params)
    volumes, own_pvc = checkpoint_volumes(kfp_cfg, be)

    def common():  # what every task is told about itself (provenance; the run id comes from its pod)
        return {"image": image, "task_name": dsl.PIPELINE_TASK_NAME_PLACEHOLDER}

    @dsl.pipeline(name=kfp_cfg.pipeline_name, description="vlpeft: VL PEFT with routing functions",
                  pipeline_config=pipeline_config(kfp_cfg, be))  # fmt: skip
    def vlpeft_pipeline(params_yaml: str = params_yaml):
        mount_workspace = volumes.mount_workspace
        created = None
        if own_pvc:  # backend < 2.14: a PVC of this run, deleted once every train task is done
            storage = (
                {"storage_class_name": kfp_cfg.workspace_storage_class}
                if kfp_cfg.workspace_storage_class
                else {}
            )
            created = kubernetes.CreatePVC(
                pvc_name_suffix="-vlpeft-workspace", access_modes=list(kfp_cfg.workspace_access_modes),
                size=kfp_cfg.workspace_size, **storage,
            ).set_display_name("workspace")  # fmt: skip

            def mount_workspace(task):
                kubernetes.mount_pvc(
                    task, pvc_name=created.outputs["name"], mount_path=kfp_cfg.workspace_mount
                )

        raw_dir = f"{kfp_cfg.data_mount}/raw" if kfp_cfg.data_pvc else ""
        data = comps.data(params_yaml=params_yaml, raw_dir=raw_dir, volume_dir=volumes.data_dir, **common())
        cpu_task(pod(tracked(data, kfp_cfg, params), kfp_cfg, data_volume=True), kfp_cfg)
        data.set_display_name("data")
        if kfp_cfg.data_pvc:
            data.set_caching_options(False)  # reads a volume: KFP's cache key cannot see its content
        backbones = {}
        if pretrained:
            pre = comps.pretrain(params_yaml=params_yaml, data=data.outputs["data"], **common())
            gpu_task(
                pod(tracked(pre, kfp_cfg, params), kfp_cfg, hub=True, data_volume=True), kfp_cfg, "train"
            )
            pre.set_display_name("pretrain")
            backbones = {"models": pre.outputs["models"]}
        feats = comps.features(params_yaml=params_yaml, volume_dir=volumes.data_dir,
                               data=data.outputs["data"], **backbones, **common())  # fmt: skip
        gpu_task(
            pod(tracked(feats, kfp_cfg, params), kfp_cfg, hub=True, data_volume=True), kfp_cfg, "features"
        )
        feats.set_display_name("features")
        if kfp_cfg.data_pvc:
            feats.set_caching_options(False)  # its output lives on the volume under this run's id
        inputs = {"data": data.outputs["data"], "store": feats.outputs["store"], **backbones}

        collected = None
        to_register = {}
        trains = []
        for task in tasks:
            prep = comps.sweep_prepare(params_yaml=params_yaml, task=task, workers=kfp_cfg.sweep_workers,
                                       **inputs, **common())  # fmt: skip
            cpu_task(study(pod(tracked(prep, kfp_cfg, params), kfp_cfg, data_volume=True), kfp_cfg), kfp_cfg)
            prep.set_display_name(f"sweep-prepare-{task}")
            with dsl.ParallelFor(items=prep.outputs["Output"], parallelism=kfp_cfg.sweep_workers,
                                 name=f"sweep-workers-{task}") as worker:  # fmt: skip
                work = comps.sweep_worker(worker=worker, spec=prep.outputs["spec"], **inputs, **common())
                pod(tracked(work, kfp_cfg, params), kfp_cfg, hub=True, data_volume=True)
                gpu_task(study(work, kfp_cfg), kfp_cfg, "sweep").set_display_name(f"sweep-worker-{task}")
            finish = comps.sweep_finish(
                params_yaml=params_yaml, task=task, spec=prep.outputs["spec"], **common()
            )
            cpu_task(study(pod(tracked(finish, kfp_cfg, params), kfp_cfg), kfp_cfg), kfp_cfg).after(work)
            finish.set_display_name(f"sweep-finish-{task}")

            registered = None
            for run in (r for r in runs if r.task == task):
                train = comps.train(
                    params_yaml=params_yaml, task=task, variant=run.variant, seed=run.seed,
                    gpus=kfp_cfg.train.gpus, checkpoints=volumes.checkpoints,
                    best=finish.outputs["best"], **inputs, **common(),
                )  # fmt: skip
                pod(tracked(train, kfp_cfg, params), kfp_cfg, hub=True, data_volume=True)
                gpu_task(train, kfp_cfg, "train").set_display_name(f"train-{run.name}")
                if mount_workspace is not None:
                    mount_workspace(train)
                train.set_caching_options(False)  # writes its checkpoints to the run's workspace
                trains.append(train)
                more = {"runs_in": collected.outputs["runs"]} if collected is not None else {}
                collected = comps.collect_run(run=run.name, model=train.outputs["model"], **more)
                cpu_task(pod(collected, kfp_cfg), kfp_cfg).set_display_name(f"collect-{run.name}")
                if registered is None and run.variant == params.registry.variant:
                    registered = train  # as dvc.yaml: registry.variant's first-seed run is registered
            if registered is not None:
                to_register[task] = registered
        if created is not None:
            kubernetes.DeletePVC(pvc_name=created.outputs["name"]).after(*trains).set_display_name(
                "workspace-delete"
            )
        summ = comps.summary(params_yaml=params_yaml, runs=collected.outputs["runs"], **common())
        cpu_task(pod(summ, kfp_cfg), kfp_cfg).set_display_name("summary")
        for task, registered in to_register.items():
            reg = comps.register(params_yaml=params_yaml, task=task, model=registered.outputs["model"],
                                 **inputs, **common())  # fmt: skip
            pod(tracked(reg, kfp_cfg, params), kfp_cfg, hub=True, data_volume=True)
            cpu_task(reg, kfp_cfg).set_caching_options(False).after(summ)
            reg.set_display_name(f"register-{task}")
            rev = comps.review(params_yaml=params_yaml, task=task, registered=reg.outputs["Output"],
                               data=data.outputs["data"], **common())  # fmt: skip
            pod(tracked(rev, kfp_cfg, params), kfp_cfg, hub=True, data_volume=True)
            cpu_task(rev, kfp_cfg).set_caching_options(False)
            rev.set_display_name(f"review-{task}")

    return vlpeft_pipeline
