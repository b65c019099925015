"""The ``summary`` stage: every final run side by side (mean ± std over seeds, image and routing gains).

Without a shared directory the runs reach the summary through ``collect_run`` tasks, each adding one run to
the collection in the summary's own layout (``metrics/<run>.json`` + ``runs/<run>/metrics.json``).
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def collect_run(run: str, model: Input[Model], runs: Output[Dataset], runs_in: Input[Dataset] = None):
    """``vlpeft.stages.add_run``: the collection ``runs_in`` plus run ``run``: the headline test figures
    its train task scored (``headline.json``) and what it trained (``metrics.json``)."""
    import json
    import os

    from vlpeft import stages

    with open(os.path.join(model.path, "headline.json")) as fh:
        headline = json.load(fh)
    stages.add_run(runs_in.path if runs_in is not None else None, run, headline=headline,
                   train_metrics=os.path.join(model.path, "metrics.json"), out=runs.path)  # fmt: skip


def summary(
    params_yaml: str,
    image: str,
    task_name: str,
    runs: Input[Dataset],
    table: Output[Markdown],
    chart: Output[HTML],
    metrics: Output[Metrics],
    data: Output[Artifact],
):
    """``vlpeft.stages.summary`` over the collected runs: Markdown table, chart, gains in the KFP UI."""
    import base64
    import os

    from vlpeft import stages
    from vlpeft.kfp_task import open_task

    # reads only what the train tasks wrote: no tracking, so no MLflow Secret
    open_task(params_yaml, task_name=task_name, image=image, inputs={"runs": runs.uri}, tracks=False)
    os.makedirs(data.path, exist_ok=True)
    png = os.path.join(data.path, "summary.png")
    result = stages.summary(os.path.join(runs.path, "metrics"), runs_dir=os.path.join(runs.path, "runs"),
                            out_json=os.path.join(data.path, "summary.json"),
                            out_md=os.path.join(data.path, "summary.md"), plot=png)  # fmt: skip
    with open(table.path, "w") as fh:
        fh.write(result["markdown"])
    with open(png, "rb") as fh:
        img = base64.b64encode(fh.read()).decode()
    with open(chart.path, "w") as fh:
        fh.write(f'<html><body><img alt="summary" src="data:image/png;base64,{img}"></body></html>\n')
    for task, s in result["summaries"].items():
        for gain in ("image_gain", "routing_gain"):
            stat = s.get(gain)
            mean = stat.get("mean") if isinstance(stat, dict) else stat
            if isinstance(mean, int | float):
                metrics.log_metric(f"{task}.{gain}", float(mean))


STAGES = (collect_run, summary)
