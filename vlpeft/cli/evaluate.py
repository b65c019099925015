"""CLI commands of the `evaluate` group (see vlpeft/cli/__init__.py for the rules).

``vlpeft evaluate vqa`` and ``vlpeft evaluate caption`` score prediction files in the official formats and
write a metrics JSON (DVC metrics). Bad input files exit with code 2 and one line; no metrics file is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vlpeft.cli import app
from vlpeft.cli.choices import MeteorMode, SpiceMode, VqaRevision
from vlpeft.eval.vqa_normalize import DEFAULT_REVISION

evaluate_app = typer.Typer(
    name="evaluate",
    help="Score prediction files: official VQA accuracy, COCO caption metrics.",
    no_args_is_help=True,
)
app.add_typer(evaluate_app, name="evaluate")

_Out = Annotated[Path, typer.Option("--out", "-o", help="metrics JSON to write (atomically)")]


def _input(help: str) -> typer.models.OptionInfo:
    return typer.Option(exists=True, dir_okay=False, help=help)


@evaluate_app.command("vqa")
def vqa(
    questions: Annotated[Path, _input("VQAv2 questions JSON")],
    annotations: Annotated[Path, _input("VQAv2 annotations JSON")],
    predictions: Annotated[Path, _input("results JSON: a list of {question_id, answer}")],
    out: _Out,
    per_question: Annotated[
        Path | None, typer.Option(help="also write per-question accuracy (percent) to this JSON")
    ] = None,
    revision: Annotated[
        VqaRevision,
        typer.Option(
            help="which official vqaEval.py rules: master (a013f00, 2021) or legacy "
            "(before a013f00, for comparing with numbers of the pre-2021 code)"
        ),
    ] = DEFAULT_REVISION,
) -> None:
    """Official VQA accuracy (overall, per answer type, per question type), identical to vqaEval.py.

    The metrics file (and the per-question file) name the revision that produced the numbers.
    """
    from vlpeft.eval.files import evaluate_vqa_files

    rev = str(revision)
    metrics = evaluate_vqa_files(
        questions, annotations, predictions, out, per_question_out=per_question, revision=rev
    )
    summary = {"overall": metrics.overall, "perAnswerType": metrics.per_answer_type, "revision": rev}
    typer.echo(json.dumps(summary))


@evaluate_app.command("caption")
def caption(
    annotations: Annotated[Path, _input("COCO captions ground truth (captions_<split>.json)")],
    predictions: Annotated[Path, _input("results JSON: a list of {image_id, caption}")],
    out: _Out,
    per_image: Annotated[
        Path | None, typer.Option(help="also write per-image CIDEr and METEOR to this JSON")
    ] = None,
    spice: Annotated[
        SpiceMode, typer.Option(help="auto: run SPICE if its CoreNLP jars are present (never downloads)")
    ] = "auto",
    meteor: Annotated[
        MeteorMode, typer.Option(help="off: skip METEOR (~5 s of JVM start-up), written as null")
    ] = "on",
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when available) through pycocoevalcap's scorers."""
    from vlpeft.eval.files import evaluate_caption_files

    metrics = evaluate_caption_files(
        annotations, predictions, out, per_image_out=per_image, spice=spice, meteor=meteor
    )
    typer.echo(json.dumps(metrics.to_json()))
