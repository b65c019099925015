"""``registry review``: gather champion and challenger of a registered model, side by side.

Numbers come from MLflow (each version's registration run: metrics, tags; training curves from the metric
history of the training run named by the ``train_run_id`` tag, else of the registration run). Sample answers
and captions come from loading both registered versions as pyfunc models and running them on a few test
images, so the review also proves that what is registered loads and predicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpeft.errors import TrackingError
from vlpeft.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    HISTORY,
    VersionInfo,
    _client,
    aliases_of,
    version_by_alias,
)


@dataclass
class Side:
    """One registered version in the review."""

    label: str
    version: VersionInfo
    metrics: dict[str, float]
    curves: dict[str, list[tuple[int, float]]]
    aliases: list[str] = field(default_factory=list)


@dataclass
class Sample:
    """One test example with the reference and each side's output."""

    image_path: Path
    question: str | None
    reference: str
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class Review:
    """Everything the HTML and Markdown reports show."""

    name: str
    task: str
    sides: list[Side]
    samples: list[Sample]
    uri: str


def _curves(client: Any, run_id: str | None, prefix: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """Histories of ``run_id``: its ``prefix`` metrics (prefix dropped), or else all with several steps."""
    if not run_id:
        return {}
    run = client.get_run(run_id)
    curves = {}
    for key in sorted(run.data.metrics):
        if prefix is not None and not key.startswith(prefix):
            continue
        points = sorted((int(m.step), float(m.value)) for m in client.get_metric_history(run_id, key))
        if prefix is not None or len({step for step, _ in points}) > 1:
            curves[key[len(prefix or "") :]] = points
    return curves


def _side(client: Any, label: str, version: VersionInfo, uri: str) -> Side:
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    results = {k: v for k, v in metrics.items() if not k.startswith(HISTORY)}
    # The training run's per-step curves when it is known, else the history logged at registration.
    curves = _curves(client, version.tags.get("train_run_id")) or _curves(client, version.run_id, HISTORY)
    aliases = aliases_of(version.name, version.version, uri)
    return Side(label, version, results, curves, aliases)


def _examples(task: str, data_root: Path, split: str, n: int) -> list[Sample]:
    """The first ``n`` test examples (one question per image for VQA), in file order: same every review."""
    if n <= 0:
        return []
    if task == "vqa":
        from vlpeft.data.vqa import load_vqa

        seen: set[int] = set()
        out = []
        for rec in load_vqa(data_root, split):
            if rec.image_id not in seen:
                seen.add(rec.image_id)
                out.append(Sample(rec.path, rec.question, rec.multiple_choice_answer))
            if len(out) == n:
                break
        return out
    from vlpeft.data.coco import load_captions

    return [Sample(rec.path, None, rec.captions[0]) for rec in load_captions(data_root, split)[:n]]


def _predict(model_uri: str, task: str, samples: list[Sample]) -> list[str]:
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    frame = pd.DataFrame({"image": [str(s.image_path) for s in samples]})
    if task == "vqa":
        frame["question"] = [s.question or "" for s in samples]
    result = model.predict(frame)
    column = "answer" if task == "vqa" else "caption"
    return [str(v) for v in (result[column] if hasattr(result, "columns") else result)]


def gather_review(
    name: str,
    *,
    uri: str | None = None,
    data_root: str | Path | None = None,
    split: str = "test",
    samples: int = 8,
) -> Review:
    """Champion and challenger of ``name`` with metrics, curves and (if ``data_root``) sample predictions.

    When one version holds both aliases it is shown once. ``TrackingError`` if the model has neither.
    """
    import mlflow

    client, uri = _client(uri)
    champion = version_by_alias(name, CHAMPION, uri)
    challenger = version_by_alias(name, CHALLENGER, uri)
    if champion is None and challenger is None:
        raise TrackingError(
            f"registered model {name!r} has no {CHAMPION!r} or {CHALLENGER!r} version at {uri}"
        )
    sides = []
    for alias, version in ((CHAMPION, champion), (CHALLENGER, challenger)):
        if version is None or any(s.version.version == version.version for s in sides):
            continue
        sides.append(_side(client, f"{alias} v{version.version}", version, uri))
    task = sides[0].version.tags.get("task", "vqa")
    examples = _examples(task, Path(data_root), split, samples) if data_root else []
    if examples:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        for side in sides:
            outputs = _predict(f"models:/{name}/{side.version.version}", task, examples)
            for sample, output in zip(examples, outputs, strict=True):
                sample.outputs[side.label] = output
    return Review(name=name, task=task, sides=sides, samples=examples, uri=uri)
