"""The Kubeflow DAG: data -> pretrain (embedded world) -> features -> sweep -> train -> evaluate -> summary
-> register -> review, built from the resolved params at compile time.

Everything that decides the DAG's shape is read from params when the pipeline is compiled: the tasks
(``sweep.tasks``), the final runs (params' ``variants:`` table x ``seeds:``, the same table dvc.yaml's
matrix iterates: no variant is spelled here), the sweep-worker parallelism and all Kubernetes settings
(``kfp:``). Secrets are referenced by their literal names; their values never enter params or the YAML.
"""

from kfp import dsl, kubernetes

import components

MLFLOW_KEYS = {"tracking_uri": "MLFLOW_TRACKING_URI", "username": "MLFLOW_TRACKING_USERNAME",
               "password": "MLFLOW_TRACKING_PASSWORD"}  # fmt: skip
OPTUNA_KEYS = {"url": "VLPEFT_SWEEP_STORAGE"}
GPU_KINDS = ("features", "sweep", "train")  # the kfp: sections of the GPU tasks


def gpu_task(task, kfp_cfg, kind: str):
    """Accelerators, node selector, tolerations, requests, /dev/shm and retries of one GPU task."""
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
    if kfp_cfg.retries:
        task.set_retry(
            num_retries=kfp_cfg.retries, backoff_duration=kfp_cfg.retry_backoff, backoff_factor=2.0
        )
    return task


def cpu_task(task, kfp_cfg):
    """Requests of a CPU task."""
    return task.set_cpu_request(kfp_cfg.cpu_task.cpu).set_memory_request(kfp_cfg.cpu_task.memory)


def tracked(task, kfp_cfg, params):
    """The MLflow Secret as environment of a task that tracks (only when tracking is on)."""
    if params.tracking.enabled:
        kubernetes.use_secret_as_env(task, secret_name=kfp_cfg.mlflow_secret, secret_key_to_env=MLFLOW_KEYS)
    return task


def study(task, kfp_cfg):
    """The Optuna database URL Secret of a sweep task."""
    kubernetes.use_secret_as_env(task, secret_name=kfp_cfg.optuna_secret, secret_key_to_env=OPTUNA_KEYS)
    return task.set_caching_options(False)  # its effect is in the database, not in its outputs


def build_pipeline(params, params_yaml: str, image: str | None = None):
    """The ``@dsl.pipeline`` function for ``params`` (validated ``Params``; ``params_yaml``, their YAML text,
    goes to every task) running every task in ``image`` (default ``kfp.image``)."""
    from vlpeft.stages import uses_pretrain
    from vlpeft.variants import final_runs

    kfp_cfg = params.kfp
    image = image or kfp_cfg.image
    comps = components.build(image)
    tasks = tuple(params.sweep.tasks)
    runs = final_runs(params, tasks)
    pretrained = uses_pretrain(params)
    workspace = dsl.WorkspaceConfig(
        size=kfp_cfg.workspace_size,
        kubernetes=dsl.KubernetesWorkspaceConfig(
            pvcSpecPatch={"storageClassName": kfp_cfg.workspace_storage_class}
        )
        if kfp_cfg.workspace_storage_class
        else None,
    )

    def common():  # what every task is told about itself (provenance)
        return {"image": image, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                "task_name": dsl.PIPELINE_TASK_NAME_PLACEHOLDER}  # fmt: skip

    @dsl.pipeline(name=kfp_cfg.pipeline_name, description="vlpeft: VL PEFT with routing functions",
                  pipeline_config=dsl.PipelineConfig(workspace=workspace))  # fmt: skip
    def vlpeft_pipeline(params_yaml: str = params_yaml):
        raw_dir = f"{kfp_cfg.data_mount}/raw" if kfp_cfg.data_pvc else ""
        data = cpu_task(tracked(comps.data(params_yaml=params_yaml, raw_dir=raw_dir, **common()), kfp_cfg,
                                params), kfp_cfg).set_display_name("data")  # fmt: skip
        if kfp_cfg.data_pvc:
            kubernetes.mount_pvc(data, pvc_name=kfp_cfg.data_pvc, mount_path=kfp_cfg.data_mount)
            data.set_caching_options(False)  # reads a volume: KFP's cache key cannot see its content
        backbones = {}
        if pretrained:
            pre = comps.pretrain(params_yaml=params_yaml, data=data.outputs["data"], **common())
            gpu_task(tracked(pre, kfp_cfg, params), kfp_cfg, "train").set_display_name("pretrain")
            backbones = {"models": pre.outputs["models"]}
        feats = comps.features(params_yaml=params_yaml, data=data.outputs["data"], **backbones, **common())
        gpu_task(tracked(feats, kfp_cfg, params), kfp_cfg, "features").set_display_name("features")
        inputs = {"data": data.outputs["data"], "store": feats.outputs["store"], **backbones}

        collected = None
        to_register = {}
        for task in tasks:
            prep = comps.sweep_prepare(params_yaml=params_yaml, task=task, workers=kfp_cfg.sweep_workers,
                                       **inputs, **common())  # fmt: skip
            cpu_task(study(tracked(prep, kfp_cfg, params), kfp_cfg), kfp_cfg).set_display_name(
                f"sweep-prepare-{task}"
            )
            with dsl.ParallelFor(items=prep.outputs["Output"], parallelism=kfp_cfg.sweep_workers,
                                 name=f"sweep-workers-{task}") as worker:  # fmt: skip
                work = comps.sweep_worker(worker=worker, spec=prep.outputs["spec"], **inputs, **common())
                gpu_task(study(tracked(work, kfp_cfg, params), kfp_cfg), kfp_cfg, "sweep")
                work.set_display_name(f"sweep-worker-{task}")
            finish = comps.sweep_finish(
                params_yaml=params_yaml, task=task, spec=prep.outputs["spec"], **common()
            )
            cpu_task(study(tracked(finish, kfp_cfg, params), kfp_cfg), kfp_cfg).after(work)
            finish.set_display_name(f"sweep-finish-{task}")

            registered = None
            for run in (r for r in runs if r.task == task):
                train = comps.train(
                    params_yaml=params_yaml, task=task, variant=run.variant, seed=run.seed,
                    gpus=kfp_cfg.train.gpus, checkpoints=dsl.WORKSPACE_PATH_PLACEHOLDER,
                    best=finish.outputs["best"], **inputs, **common(),
                )  # fmt: skip
                gpu_task(tracked(train, kfp_cfg, params), kfp_cfg, "train").set_display_name(
                    f"train-{run.name}"
                )
                train.set_caching_options(False)  # writes its checkpoints to the run workspace
                ev = comps.evaluate(params_yaml=params_yaml, task=task, data=data.outputs["data"],
                                    model=train.outputs["model"], **common())  # fmt: skip
                cpu_task(ev, kfp_cfg).set_display_name(f"evaluate-{run.name}")
                more = {"runs_in": collected.outputs["runs"]} if collected is not None else {}
                collected = comps.collect_run(run=run.name, scores=ev.outputs["scores"],
                                              model=train.outputs["model"], **more)  # fmt: skip
                cpu_task(collected, kfp_cfg).set_display_name(f"collect-{run.name}")
                if registered is None and run.variant == params.registry.variant:
                    registered = train  # as dvc.yaml: registry.variant's first-seed run is registered
            if registered is not None:
                to_register[task] = registered
        summ = comps.summary(params_yaml=params_yaml, runs=collected.outputs["runs"], **common())
        cpu_task(summ, kfp_cfg).set_display_name("summary")
        for task, registered in to_register.items():
            reg = comps.register(params_yaml=params_yaml, task=task, model=registered.outputs["model"],
                                 **inputs, **common())  # fmt: skip
            cpu_task(tracked(reg, kfp_cfg, params), kfp_cfg).set_caching_options(False).after(summ)
            reg.set_display_name(f"register-{task}")
            rev = comps.review(params_yaml=params_yaml, task=task, registered=reg.outputs["Output"],
                               data=data.outputs["data"], **common())  # fmt: skip
            cpu_task(tracked(rev, kfp_cfg, params), kfp_cfg).set_caching_options(False)
            rev.set_display_name(f"review-{task}")

    return vlpeft_pipeline
