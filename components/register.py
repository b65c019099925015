"""The ``register`` and ``review`` stages: the MLflow model registry (caching off: they have side effects)."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output


def register(
    params_yaml: str,
    task: str,
    image: str,
    task_name: str,
    data: Input[Dataset],
    store: Input[Dataset],
    model: Input[Model],
    record: Output[Artifact],
    models: Input[Model] = None,
) -> str:
    """``vlpeft.stages.register`` of a run's test checkpoint (``best`` or ``last``, the one its metrics are
    of); returns ``models:/<name>@challenger``."""
    import os

    from vlpeft import stages
    from vlpeft.kfp_task import open_task

    inputs = {"data": data.uri, "features": store.uri, "model": model.uri}
    inputs |= {"models": models.uri} if models is not None else {}
    params = open_task(params_yaml, task_name=task_name, image=image, inputs=inputs)
    result = stages.register(
        params, task, run=model.path, out=os.path.join(record.path, "registered.json"),
        models=models.path if models is not None else None,
    )  # fmt: skip
    record.metadata.update({k: v for k, v in result.items() if k in ("name", "version", "registered")})
    return f"models:/{result['name']}@challenger" if result["registered"] else ""


def review(
    params_yaml: str,
    task: str,
    image: str,
    task_name: str,
    registered: str,
    data: Input[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
):
    """``vlpeft.stages.review``: challenger beside champion (HTML report, Markdown summary)."""
    import shutil
    import tempfile

    from vlpeft import stages
    from vlpeft.kfp_task import open_task, resolve

    params = open_task(params_yaml, task_name=task_name, image=image, inputs={"data": data.uri})
    if not registered:  # tracking off: nothing was registered
        for out in (report.path, summary.path):
            with open(out, "w") as fh:
                fh.write("tracking.enabled is false: no model was registered\n")
        return
    result = stages.review(
        params, stages.registered_name(params, task), out=tempfile.mkdtemp(), data=resolve(data.path)
    )
    shutil.copyfile(result["html"], report.path)
    shutil.copyfile(result["markdown"], summary.path)


STAGES = (register, review)
