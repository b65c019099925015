"""The ``pretrain`` stage (embedded world only): tokenizer and tiny ViT / RoBERTa / GPT-2."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def pretrain(
    params_yaml: str,
    image: str,
    task_name: str,
    data: Input[Dataset],
    models: Output[Model],
    metrics: Output[Metrics],
):
    """``vlpeft.stages.pretrain``; the health figures (those of DVC's metrics/pretrain.json) and the
    validation figures of each backbone go to the KFP UI."""
    import json
    import os
    import tempfile

    from vlpeft import stages
    from vlpeft.config import flatten
    from vlpeft.kfp_task import log_numeric, open_task, resolve

    params = open_task(params_yaml, task_name=task_name, image=image,
                       inputs={"data": data.uri}, outputs={"models": models.uri})  # fmt: skip
    scratch = tempfile.mkdtemp()
    metrics_file, headline_file = (os.path.join(scratch, n) for n in ("pretrain.json", "health.json"))
    result = stages.pretrain(
        params, data=resolve(data.path), out=models.path, metrics=metrics_file, headline=headline_file
    )
    with open(headline_file) as f:
        log_numeric(metrics, json.load(f))
    log_numeric(metrics, flatten({k: v for k, v in result.items() if k != "seconds"}))


STAGES = (pretrain,)
