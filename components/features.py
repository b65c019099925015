"""The ``features`` stage (GPU): the frozen vision encoder once over every image -> the feature store."""

from kfp.dsl import Dataset, Input, Model, Output


def features(
    params_yaml: str,
    image: str,
    run_id: str,
    task_name: str,
    data: Input[Dataset],
    store: Output[Dataset],
    models: Input[Model] = None,
):
    """``vlpeft.stages.features``; ``models`` is the pretrain output (absent for hub backbones)."""
    from vlpeft import stages
    from vlpeft.kfp_task import open_task

    inputs = {"data": data.uri, **({"models": models.uri} if models is not None else {})}
    params = open_task(params_yaml, run_id=run_id, task_name=task_name, image=image, inputs=inputs,
                       outputs={"features": store.uri})  # fmt: skip
    meta = stages.features(params, data=data.path, out=store.path,
                           models=models.path if models is not None else None)  # fmt: skip
    store.metadata.update({"images": meta["n_images"], "width": meta["width"], "kinds": meta["kinds"]})


STAGES = (features,)
