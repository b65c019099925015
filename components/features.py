"""The ``features`` stage (GPU): the frozen vision encoder once over every image -> the feature store."""

from kfp.dsl import Dataset, Input, Model, Output


def features(
    params_yaml: str,
    volume_dir: str,
    image: str,
    task_name: str,
    data: Input[Dataset],
    store: Output[Dataset],
    models: Input[Model] = None,
):
    """``vlpeft.stages.features``; ``models`` is the pretrain output (absent for hub backbones). With a
    data volume (``volume_dir``) the store is written there and the artifact only points to it."""
    import os

    from vlpeft import stages
    from vlpeft.kfp_task import current_run_id, on_volume, open_task, resolve

    inputs = {"data": data.uri, **({"models": models.uri} if models is not None else {})}
    params = open_task(params_yaml, task_name=task_name, image=image, inputs=inputs,
                       outputs={"features": store.uri})  # fmt: skip
    out = store.path
    if volume_dir:
        out = on_volume(store.path, os.path.join(volume_dir, current_run_id(), "features"))
    meta = stages.features(params, data=resolve(data.path), out=out,
                           models=models.path if models is not None else None)  # fmt: skip
    store.metadata.update({"images": meta["n_images"], "width": meta["width"], "kinds": meta["kinds"]})


STAGES = (features,)
