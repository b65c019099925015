"""``registry review``: gather champion and challenger of a registered model, side by side.

Numbers come from MLflow (each version's registration run: metrics, tags; training curves from the metric
history of the training run named by the ``train_run_id`` tag, else of the registration run). Sample answers
and captions come from loading both registered versions (as data, with the installed vlpeft:
``load_registered``) and running them on a few test images, so the review also proves that what is
registered loads and predicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError, TrackingError
from vlpeft.tasks import PyfuncSpec, get_task
from vlpeft.tracking.names import metric_key
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
    """One test example of one task with the reference and each side's output.

    ``question`` is the question (NLVR2: the statement), None for captions; ``image2_path`` is NLVR2's
    second image.
    """

    task: str
    image_path: Path
    question: str | None
    reference: str
    outputs: dict[str, str] = field(default_factory=dict)
    image2_path: Path | None = None


@dataclass
class Review:
    """Everything the HTML and Markdown reports show.

    ``tasks`` are the tasks the model was trained on (its ``tasks`` tag: ``[task]``, or a multi-task model's).
    """

    name: str
    task: str
    sides: list[Side]
    samples: list[Sample]
    uri: str
    tasks: list[str] = field(default_factory=list)


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
    # metric_key: versions registered before the group/name scheme read the same (perAnswerType.yes/no)
    results = {metric_key(k): v for k, v in metrics.items() if not k.startswith(HISTORY)}
    # The training run's per-step curves when it is known, else the history logged at registration.
    curves = _curves(client, version.tags.get("train_run_id")) or _curves(client, version.run_id, HISTORY)
    aliases = aliases_of(version.name, version.version, uri)
    return Side(label, version, results, curves, aliases)


def _first_per_image(records: list[Any], key: Callable[[Any], Any], n: int) -> list[Any]:
    """The first record of each image (``key(record)``), in file order, at most ``n``."""
    seen: set[Any] = set()
    out = []
    for rec in records:
        if key(rec) not in seen:
            seen.add(key(rec))
            out.append(rec)
        if len(out) == n:
            break
    return out


def _vqa_examples(root: Path, split: str, n: int) -> list[Sample]:
    from vlpeft.data.vqa import load_vqa

    records = _first_per_image(load_vqa(root, split), lambda r: r.image_id, n)
    return [Sample("vqa", r.path, r.question, r.multiple_choice_answer) for r in records]


def _caption_examples(root: Path, split: str, n: int) -> list[Sample]:
    from vlpeft.data.coco import load_captions

    return [Sample("caption", r.path, None, r.captions[0]) for r in load_captions(root, split)[:n]]


# The GQA and NLVR2 files name their splits like the official data (``vlpeft.data.gqa`` / ``nlvr``); the
# multi-task bindings test on GQA testdev and NLVR2 test, validate on their ``valid``.
GQA_SPLITS = {"test": "testdev", "val": "valid"}
NLVR_SPLITS = {"val": "valid"}


def _gqa_examples(root: Path, split: str, n: int) -> list[Sample]:
    from vlpeft.data.gqa import load_gqa
    from vlpeft.data.images import image_table, read_image_table

    # GQA's img_id is a feature-store id (the embedded world) or a name of gqa/images.json (prepared data).
    paths = {str(i): p for i, p in image_table(root)}
    names = root / "gqa" / "images.json"
    if names.is_file():
        paths |= {name: root / entry["file"] for name, entry in read_image_table(names).items()}
    records = _first_per_image(load_gqa(root, GQA_SPLITS.get(split, split)), lambda r: r.img_id, n)
    missing = [r.img_id for r in records if r.img_id not in paths]
    if missing:
        raise DataError(f"{root}: GQA image {missing[0]!r} is in no image table")
    return [Sample("gqa", paths[r.img_id], r.question, r.answer) for r in records]


def _nlvr_examples(root: Path, split: str, n: int) -> list[Sample]:
    from vlpeft.data.nlvr import load_image_names, load_nlvr

    names = load_image_names(root)
    records = _first_per_image(load_nlvr(root, NLVR_SPLITS.get(split, split)), lambda r: r.image_set, n)
    try:
        return [
            Sample("nlvr", root / names[r.img0]["file"], r.sentence, r.answer,
                   image2_path=root / names[r.img1]["file"])
            for r in records
        ]  # fmt: skip
    except KeyError as exc:
        raise DataError(f"{root / 'nlvr' / 'images.json'}: image {exc.args[0]!r} is not listed") from None


# Task -> its first ``n`` test examples (one per image or image pair, file order: the same every review).
EXAMPLES: dict[str, Callable[[Path, str, int], list[Sample]]] = {
    "vqa": _vqa_examples,
    "gqa": _gqa_examples,
    "nlvr": _nlvr_examples,
    "caption": _caption_examples,
}


def _b64(path: Path | None) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode() if path else ""


# The pyfunc input column (``vlpeft.tasks.PyfuncSpec``) -> its value for a sample (images as base64, as a
# client of the served model sends them).
COLUMNS: dict[str, Callable[[Sample], str]] = {
    "task": lambda s: s.task,
    "image": lambda s: _b64(s.image_path),
    "image2": lambda s: _b64(s.image2_path),
    "question": lambda s: s.question or "",
}


def _examples(tasks: list[str], data_root: Path, split: str, n: int) -> list[Sample]:
    """The first ``n`` examples of each of ``tasks`` (a multi-task model: ``n`` per task)."""
    if n <= 0:
        return []
    unknown = [t for t in tasks if t not in EXAMPLES]
    if unknown:
        raise TrackingError(
            f"tasks tag names {unknown[0]!r}: no review samples for it ({', '.join(EXAMPLES)})"
        )
    return [sample for task in tasks for sample in EXAMPLES[task](Path(data_root), split, n)]


def _predict(model_uri: str, spec: PyfuncSpec, samples: list[Sample], uri: str) -> list[str]:
    """The registered version's outputs for ``samples`` (one request frame with the task's input columns).

    The version is read as data by the installed vlpeft (``load_registered``): nothing stored with it runs.
    """
    import pandas as pd

    from vlpeft.tracking.registry import load_registered

    model = load_registered(model_uri, uri)
    frame = pd.DataFrame({c: [COLUMNS[c](s) for s in samples] for c in spec.inputs})
    result = model.predict(frame)
    return [str(v) for v in result[spec.output]]


def gather_review(
    name: str,
    *,
    uri: str | None = None,
    data_root: str | Path | None = None,
    split: str = "test",
    samples: int = 8,
) -> Review:
    """Champion and challenger of ``name`` with metrics, curves and (if ``data_root``) sample predictions:
    ``samples`` examples of each task the model was trained on.

    When one version holds both aliases it is shown once. ``TrackingError`` if the model has neither.
    """
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
    tags = sides[0].version.tags
    spec = get_task(tags.get("task", "vqa"), what=f"registered model {name!r}: tag 'task'")
    if spec.pyfunc is None:
        raise TrackingError(f"registered model {name!r}: task {spec.name} has no pyfunc to review")
    # What the model was trained on; versions registered before the ``tasks`` tag: the task itself.
    tasks = tags["tasks"].split(",") if tags.get("tasks") else [spec.name]
    examples = _examples(tasks, Path(data_root), split, samples) if data_root else []
    if examples:
        for side in sides:
            outputs = _predict(f"models:/{name}/{side.version.version}", spec.pyfunc, examples, uri)
            for sample, output in zip(examples, outputs, strict=True):
                sample.outputs[side.label] = output
    return Review(name=name, task=spec.name, sides=sides, samples=examples, uri=uri, tasks=tasks)
