"""The ``train`` stage (one task x variant x seed, scored on its test split once) and ``evaluate`` (scoring a
predictions file with the official scorers, for predictions made elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlpeft.config import Params
from vlpeft.errors import ConfigError
from vlpeft.io import check_writable
from vlpeft.stages.common import _tracked, check_task, localize_backbones
from vlpeft.stages.declare import StageDecl
from vlpeft.tracking.base import Tracker

# The train stage scores its own test split (`evaluate` settings) and logs to MLflow (`tracking`: the register
# stage finds the run there). Not read: `seed` (the world's and pretraining's), `sweep` (its best values come
# in as the best_params.json file).
STAGE = StageDecl(
    name="train",
    functions=("train",),  # evaluate: scoring predictions made elsewhere, not a pipeline stage
    module=__name__,
    cli="vlpeft.cli.train",
    reads=("data", "model", "features.pooling", "evaluate", "tracking", "{task}", "variants.{variant}"),
    dispatch=("tasks", "methods"),
)


def train(
    params: Params,
    task: str,
    *,
    data: str | Path,
    out: str | Path,
    features: str | Path | None = None,
    models: str | Path | None = None,
    variant: str | None = None,
    seed: int | None = None,
    sweep_best: str | Path | None = None,
    headline: str | Path | None = None,
    resume: bool = False,
    evaluate_test: bool = True,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``train`` stage: one task trained, validated, checkpointed and scored on the test split.

    ``sweep_best`` (the sweep's ``best_params.json``), the ``variant`` of params' ``variants:`` table and the
    training ``seed`` are applied in that order (``vlpeft.variants.resolve_variant``). ``headline`` also gets
    the flat headline test figures. Returns the flattened metrics (``test.overall``, ``val.best``, ...).
    """
    check_writable(out, headline)
    from vlpeft.train.run import train_task

    task = check_task(task)
    if variant is not None or seed is not None or sweep_best is not None:
        from vlpeft.sweep.best import load_best_params
        from vlpeft.variants import resolve_variant

        best = load_best_params(sweep_best) if sweep_best is not None else None
        params = resolve_variant(params, task, variant, seed, best)
    params = localize_backbones(params, models)
    tags = {"task": task, "seed": str(params.task(task).seed), **({"variant": variant} if variant else {})}
    with _tracked(params, f"train@{task}", tracker, **tags) as t:
        return train_task(params, task, data, features, out, tracker=t, resume=resume,
                          evaluate_test=evaluate_test, headline_out=headline, variant=variant)  # fmt: skip


def ground_truth(task: str, data: str | Path, split: str = "test") -> dict[str, Path]:
    """The official ground-truth files of ``split`` in the data layout (VQA questions + annotations, COCO)."""
    from vlpeft.data.formats import annotations_path, captions_path, questions_path

    root = Path(data)
    if check_task(task) == "vqa":
        return {"questions": questions_path(root, split), "annotations": annotations_path(root, split)}
    return {"annotations": captions_path(root, split)}


def evaluate(
    params: Params,
    task: str,
    *,
    predictions: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    questions: str | Path | None = None,
    annotations: str | Path | None = None,
    per_item: str | Path | None = None,
) -> dict[str, Any]:
    """The ``evaluate`` stage: official VQA accuracy or COCO caption metrics of a predictions file -> ``out``.

    Ground truth: the explicit files, else the test split of ``data``. Returns the metrics JSON's content.
    """
    check_writable(out, per_item)
    from vlpeft.eval.files import evaluate_caption_files, evaluate_vqa_files

    task = check_task(task)
    gt = ground_truth(task, data) if data is not None else {}
    if task == "vqa":
        q, a = questions or gt.get("questions"), annotations or gt.get("annotations")
        if q is None or a is None:
            raise ConfigError("evaluate vqa: pass --questions and --annotations (or the data root)")
        m = evaluate_vqa_files(Path(q), Path(a), Path(predictions), Path(out),
                               per_question_out=Path(per_item) if per_item else None,
                               revision=params.evaluate.vqa_revision)  # fmt: skip
        return m.to_json()
    a = annotations or gt.get("annotations")
    if a is None:
        raise ConfigError("evaluate caption: pass --annotations (or the data root)")
    metrics = evaluate_caption_files(Path(a), Path(predictions), Path(out),
                                     per_image_out=Path(per_item) if per_item else None,
                                     spice=params.evaluate.spice, meteor=params.evaluate.meteor)  # fmt: skip
    return metrics.to_json()
