"""The ``data`` stage: the synthetic world, or COCO/VQAv2 prepared from downloads on the data volume."""

from kfp.dsl import Dataset, Output


def data(params_yaml: str, raw_dir: str, volume_dir: str, image: str, task_name: str, data: Output[Dataset]):
    """``vlpeft.stages.data``: ``data.source: synthetic`` generates the world; ``coco`` reads ``raw_dir``.

    With a data volume (``volume_dir``, per run) the prepared tree (symlinks to the downloads) is written
    there and the ``data`` artifact only points to it: real-scale images never enter the artifact store.
    """
    import os

    from vlpeft import stages
    from vlpeft.kfp_task import current_run_id, on_volume, open_task

    params = open_task(params_yaml, task_name=task_name, image=image, outputs={"data": data.uri})
    if volume_dir:
        out = on_volume(data.path, os.path.join(volume_dir, current_run_id(), "data"))
        result = stages.data(params, out=out, raw=raw_dir or None, link="symlink")
    else:
        result = stages.data(params, out=data.path, raw=raw_dir or None, link="copy")
    data.metadata.update({"counts": result["counts"], "source": params.data.source})


STAGES = (data,)
