"""The ``evaluate`` stage: the official scorers over a trained run's test predictions."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def evaluate(
    params_yaml: str,
    task: str,
    image: str,
    run_id: str,
    task_name: str,
    data: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    scores: Output[Artifact],
):
    """``vlpeft.stages.evaluate`` on ``predictions_test.json``: the official metrics (``scores``) and their
    headline figures (``metrics``, shown in the KFP UI)."""
    import os

    from vlpeft import stages
    from vlpeft.eval.compare import headline_metrics
    from vlpeft.io import write_json
    from vlpeft.kfp_task import log_numeric, open_task

    params = open_task(params_yaml, run_id=run_id, task_name=task_name, image=image,
                       inputs={"data": data.uri, "model": model.uri})  # fmt: skip
    os.makedirs(scores.path, exist_ok=True)
    official = stages.evaluate(params, task, predictions=os.path.join(model.path, "predictions_test.json"),
                               data=data.path, out=os.path.join(scores.path, "metrics.json"))  # fmt: skip
    headline = headline_metrics(task, official)
    write_json(os.path.join(scores.path, "headline.json"), headline)
    log_numeric(metrics, headline)


STAGES = (evaluate,)
