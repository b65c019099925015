"""CLI commands ``vlpeft train`` and ``vlpeft predict`` (see vlpeft/cli/__init__.py for the rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.choices import PredictTask
from vlpeft.cli.common import ParamsOption, SetOption, load
from vlpeft.tasks import TaskName


@app.command("train")
def train(
    task_name: Annotated[TaskName, typer.Option("--task", help="the task (vlpeft.tasks)")],
    data: Annotated[
        Path,
        typer.Option(exists=True, file_okay=False, help="data root (the layout written by `vlpeft data`)"),
    ],
    out: Annotated[
        Path, typer.Option(help="output dir: best/, last/, curves.json, metrics.json, predictions")
    ],
    features: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="feature store dir (`vlpeft features`); not needed for images/blind",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="continue from out/last after a crash")
    ] = False,
    test: Annotated[
        bool, typer.Option("--test/--no-test", help="evaluate the test split (--no-test: skip it)")
    ] = True,
    variant: Annotated[
        str | None, typer.Option(help="a final variant of params' variants table (best, norouting, blind)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="training seed (<task>.seed), e.g. one of params' seeds")
    ] = None,
    sweep_best: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="the sweep's best_params.json, merged before the variant's overrides",
        ),
    ] = None,
    headline: Annotated[
        Path | None,
        typer.Option(help="also write the flat headline test figures here (the DVC metrics file)"),
    ] = None,
    models: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="where the pretrain output is, when not ./models (Kubeflow)"
        ),
    ] = None,
    params: ParamsOption = None,
    sets: SetOption = None,
) -> None:
    """Train a VQA or caption model: validation each epoch, checkpoints, test evaluation (torchrun-ready)."""
    import json

    from vlpeft import stages
    from vlpeft.errors import ConfigError

    task = task_name.value  # a name of the task table
    if headline is not None and not test:
        raise ConfigError("--headline: the headline figures are test metrics: drop --no-test")
    cfg = load(params, sets)
    result = stages.train(
        cfg, task, data=data, features=features, out=out, variant=variant, seed=seed, sweep_best=sweep_best,
        headline=headline, resume=resume, evaluate_test=test, models=models,
    )  # fmt: skip
    if result:
        keys = [k for k in result if k.startswith("test.") and k.count(".") == 1] + ["val.best"]
        typer.echo(json.dumps({k: result[k] for k in keys if k in result}))


@app.command("predict")
def predict(
    model: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="a trained model dir (out/best or out/last)")
    ],
    image: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="image file")],
    question: Annotated[str | None, typer.Option(help="question (VQA, GQA) or statement (NLVR2)")] = None,
    task: Annotated[PredictTask | None, typer.Option(help="the task, for multi-task models")] = None,
    image2: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="NLVR2's second (right) image")
    ] = None,
) -> None:
    """Answer a question about an image (VQA model), caption it (caption model), or run one task of a
    multi-task model (``--task``; NLVR2 prints true/false for the pair); prints the text."""
    from vlpeft.data.images import load_image
    from vlpeft.errors import ConfigError
    from vlpeft.train.predict import Predictor

    predictor = Predictor.load(model)
    img = load_image(image)
    if predictor.task == "generative":
        if task is None:
            raise ConfigError("--task: required for a multi-task model (vqa, gqa, nlvr or caption)")
        second = load_image(image2) if image2 is not None else None
        typer.echo(predictor.outputs([task], [img], [question or ""], [second])[0])
        return
    if task is not None or image2 is not None:
        raise ConfigError(f"--task/--image2: only for multi-task models; this is a {predictor.task} model")
    if predictor.task == "vqa":
        if not question:
            raise ConfigError("--question: required for a VQA model")
        typer.echo(predictor.answer(img, question))
    else:
        if question:
            raise ConfigError("--question: a caption model takes no question")
        typer.echo(predictor.caption(img))
