"""The sweep as three kinds of task: prepare (study + queue) -> N workers (GPU, in a ParallelFor) -> finish.

Workers share one Optuna study in the database named by ``$VLPEFT_SWEEP_STORAGE`` (the Optuna Secret on a
cluster); the prepared spec artifact carries the storage URL without its password.
"""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def sweep_prepare(
    params_yaml: str,
    task: str,
    workers: int,
    image: str,
    task_name: str,
    data: Input[Dataset],
    store: Input[Dataset],
    spec: Output[Artifact],
    models: Input[Model] = None,
) -> list[int]:
    """``vlpeft.stages.sweep_prepare``: the study and its trial slots; returns the worker indices to run."""
    import os

    from vlpeft import stages
    from vlpeft.kfp_task import open_task, resolve, with_sweep_storage

    inputs = {"data": data.uri, "features": store.uri}
    params = open_task(params_yaml, task_name=task_name, image=image, inputs=inputs,
                       needs_sweep_storage=True)  # fmt: skip
    setup = stages.sweep_prepare(
        with_sweep_storage(params), task, data=resolve(data.path), features=resolve(store.path),
        out=spec.path, models=models.path if models is not None else None, workers=workers,
    )  # fmt: skip
    setup.spec_template().save(os.path.join(spec.path, "worker-spec.json"))
    spec.metadata.update({"study": setup.study_name, "queued": setup.queued, "task": task})
    return list(range(workers))


def sweep_worker(
    image: str,
    task_name: str,
    worker: int,
    spec: Input[Artifact],
    data: Input[Dataset],
    store: Input[Dataset],
    log: Output[Artifact],
    models: Input[Model] = None,
):
    """``vlpeft.stages.sweep_worker``: run queued trials of the shared study until none is left."""
    import json
    import os

    from vlpeft import stages
    from vlpeft.kfp_task import open_task, resolve

    with open(os.path.join(spec.path, "worker-spec.json")) as fh:
        params_yaml = json.dumps(json.load(fh)["params"])  # JSON is YAML
    open_task(params_yaml, task_name=task_name, image=image,
              inputs={"data": data.uri, "features": store.uri, "spec": spec.uri},
              needs_sweep_storage=True)  # fmt: skip
    n = stages.sweep_worker(
        os.path.join(spec.path, "worker-spec.json"), data=resolve(data.path), features=resolve(store.path),
        out=log.path, models=models.path if models is not None else None, worker_index=worker,
    )  # fmt: skip
    log.metadata.update({"worker": worker, "trials": n})


def sweep_finish(
    params_yaml: str,
    task: str,
    image: str,
    task_name: str,
    spec: Input[Artifact],
    best: Output[Artifact],
    table: Output[Markdown],
    metrics: Output[Metrics],
):
    """``vlpeft.stages.sweep_finish``: ``best_params.json``, tables and plots of the study (in ``best``)."""
    import shutil

    from vlpeft import stages
    from vlpeft.kfp_task import open_task, with_sweep_storage

    params = open_task(params_yaml, task_name=task_name, image=image,
                       inputs={"spec": spec.uri}, needs_sweep_storage=True)  # fmt: skip
    summary = stages.sweep_finish(with_sweep_storage(params), task, out=best.path)
    shutil.copyfile(f"{best.path}/table.md", table.path)
    top = summary["best"]
    metrics.log_metric("best_value", float(top["value"]))
    metrics.log_metric("best_rank", float(top["rank"]))
    metrics.log_metric("trials", float(summary["trials"]))
    best.metadata.update({"routing": top["routing"], "rank": top["rank"], "study": summary["study_name"]})


STAGES = (sweep_prepare, sweep_worker, sweep_finish)
