"""The ``data`` stage: the synthetic world, or COCO/VQAv2 prepared from downloads on a volume."""

from kfp.dsl import Dataset, Output


def data(params_yaml: str, raw_dir: str, image: str, run_id: str, task_name: str, data: Output[Dataset]):
    """``vlpeft.stages.data``: ``data.source: synthetic`` generates the world; ``coco`` reads ``raw_dir``."""
    from vlpeft import stages
    from vlpeft.kfp_task import open_task

    params = open_task(params_yaml, run_id=run_id, task_name=task_name, image=image,
                       outputs={"data": data.uri})  # fmt: skip
    result = stages.data(params, out=data.path, raw=raw_dir or None, link="copy")
    data.metadata.update({"counts": result["counts"], "source": params.data.source})


STAGES = (data,)
