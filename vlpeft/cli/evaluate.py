"""CLI commands of the `evaluate` group (see vlpeft/cli/__init__.py for the rules).

``vlpeft evaluate vqa`` and ``vlpeft evaluate caption`` score prediction files in the official formats and
write a metrics JSON (DVC metrics). Bad input files exit with code 2 and one line; no metrics file is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from vlpeft.cli import app

evaluate_app = typer.Typer(
    name="evaluate",
    help="Score prediction files: official VQA accuracy, COCO caption metrics.",
    no_args_is_help=True,
)
app.add_typer(evaluate_app, name="evaluate")

_Out = Annotated[Path, typer.Option("--out", "-o", help="metrics JSON to write (atomically)")]


@evaluate_app.command("vqa")
def vqa(
    questions: Annotated[Path, typer.Option(help="VQAv2 questions JSON")],
    annotations: Annotated[Path, typer.Option(help="VQAv2 annotations JSON")],
    predictions: Annotated[Path, typer.Option(help="results JSON: a list of {question_id, answer}")],
    out: _Out,
    per_question: Annotated[
        Path | None, typer.Option(help="also write per-question accuracy (percent) to this JSON")
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(
            help="which official vqaEval.py rules: master (a013f00, 2021; the default) or legacy "
            "(before a013f00, for comparing with numbers of the pre-2021 code)"
        ),
    ] = None,
) -> None:
    """Official VQA accuracy (overall, per answer type, per question type), identical to vqaEval.py.

    The metrics file (and the per-question file) name the revision that produced the numbers.
    """
    from vlpeft.eval.files import evaluate_vqa_files
    from vlpeft.eval.vqa_normalize import DEFAULT_REVISION, vqa_revision

    rev = vqa_revision(revision or DEFAULT_REVISION).name  # unknown: one line, exit code 2, nothing written
    metrics = evaluate_vqa_files(
        questions, annotations, predictions, out, per_question_out=per_question, revision=rev
    )
    summary = {"overall": metrics.overall, "perAnswerType": metrics.per_answer_type, "revision": rev}
    typer.echo(json.dumps(summary))


@evaluate_app.command("caption")
def caption(
    annotations: Annotated[Path, typer.Option(help="COCO captions ground truth (captions_<split>.json)")],
    predictions: Annotated[Path, typer.Option(help="results JSON: a list of {image_id, caption}")],
    out: _Out,
    per_image: Annotated[
        Path | None, typer.Option(help="also write per-image CIDEr and METEOR to this JSON")
    ] = None,
    spice: Annotated[
        str, typer.Option(help="auto: run SPICE if its CoreNLP jars are present (never downloads); off")
    ] = "auto",
    meteor: Annotated[
        str, typer.Option(help="on; off: skip METEOR (~5 s of JVM start-up), written as null")
    ] = "on",
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when available) through pycocoevalcap's scorers."""
    from vlpeft.errors import ConfigError
    from vlpeft.eval.files import evaluate_caption_files

    if spice not in ("auto", "off"):
        raise ConfigError(f"--spice: expected 'auto' or 'off', got {spice!r}")
    if meteor not in ("on", "off"):
        raise ConfigError(f"--meteor: expected 'on' or 'off', got {meteor!r}")
    mode: Literal["auto", "off"] = "auto" if spice == "auto" else "off"
    with_meteor: Literal["on", "off"] = "on" if meteor == "on" else "off"
    metrics = evaluate_caption_files(
        annotations, predictions, out, per_image_out=per_image, spice=mode, meteor=with_meteor
    )
    typer.echo(json.dumps(metrics.to_json()))
