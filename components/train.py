"""The ``train`` stage (GPU) of one final run: a task, a variant of params' ``variants:`` table, a seed.

Checkpoints live on the run workspace (``checkpoints``), not in the output artifact: a retried task (a
preempted pod) finds its ``last/`` checkpoint there and resumes exactly where it stopped. With more than
one GPU the stage runs under ``torchrun`` inside the pod.
"""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def train(
    params_yaml: str,
    task: str,
    variant: str,
    seed: int,
    gpus: int,
    checkpoints: str,
    image: str,
    run_id: str,
    task_name: str,
    data: Input[Dataset],
    store: Input[Dataset],
    best: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    models: Input[Model] = None,
):
    """``vlpeft.stages.train`` of ``task``/``variant``/``seed``; the headline test figures go to the UI."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from vlpeft import stages
    from vlpeft.kfp_task import copy_tree, log_numeric, open_task, write_params
    from vlpeft.variants import run_name

    name = run_name(task, variant, seed)
    inputs = {"data": data.uri, "features": store.uri, "best": best.uri}
    inputs |= {"models": models.uri} if models is not None else {}
    params = open_task(params_yaml, run_id=run_id, task_name=task_name, image=image, inputs=inputs,
                       outputs={"model": model.uri})  # fmt: skip
    from vlpeft.train.run import run_checkpoint

    work = os.path.join(checkpoints, "train", run_id, name)  # per run: a later run starts afresh
    resume = run_checkpoint(work) is not None  # a retry of this task: continue from there
    sweep_best = os.path.join(best.path, "best_params.json")
    headline = os.path.join(work, "headline.json")
    models_dir = models.path if models is not None else None
    if gpus > 1:  # data-parallel on this pod's GPUs: the same stage through the CLI under torchrun
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", "vlpeft", "train", "--task", task, "--variant", variant, "--seed", str(seed),
                "--sweep-best", sweep_best, "--data", data.path, "--features", store.path, "--out", work,
                "--headline", headline, "--params", str(write_params(params_yaml, tempfile.mkdtemp())),
                ]  # fmt: skip
        argv += ["--models", models_dir] if models_dir else []
        argv += ["--resume"] if resume else []
        subprocess.run(argv, check=True)
    else:
        stages.train(params, task, data=data.path, features=store.path, out=work, models=models_dir,
                     variant=variant, seed=seed, sweep_best=sweep_best, headline=headline,
                     resume=resume)  # fmt: skip
    copy_tree(work, model.path, skip=("trainer",))  # the optimizer state stays on the workspace
    with open(headline) as fh:
        log_numeric(metrics, json.load(fh))
    model.metadata.update({"task": task, "variant": variant, "seed": seed, "resumed": resume})


STAGES = (train,)
