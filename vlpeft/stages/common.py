"""What every stage function shares: the task check, the stage's tracker, result logging, backbone paths.

``tracker`` is optional in every stage function: ``None`` means "the stage's own tracker, chosen from
``params.tracking``" (``stage_tracker``); tests pass a ``NullTracker``.

Backbone paths: the embedded world's params name the pretrained backbones ``models/<part>`` (the pretrain
stage's output dir under the project root). Where that dir lives elsewhere (a Kubeflow ``Model`` artifact),
stages take ``models=<dir>`` and read ``models/<part>`` as ``<dir>/<part>`` (``localize_backbones``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlpeft.config import Params, Task, flatten
from vlpeft.tracking.base import NullTracker, Tracker

PRETRAIN_DIR = "models"  # what params call the pretrain stage's output (model.vision: models/vit, ...)
BACKBONE_FIELDS = ("vision", "vqa_backbone", "caption_backbone", "generative_backbone")


def check_task(task: str) -> Task:
    """``task`` if it is a task of the table (``vlpeft.tasks``), else a one-line ``ConfigError``."""
    from vlpeft.tasks import get_task

    return get_task(task, what="--task").name


def stage_tracker(params: Params, stage: str, tags: dict[str, str] | None = None) -> Any:
    """The tracker of one stage execution (a context manager): MLflow per ``params.tracking``, or none.

    Under ``torchrun`` only rank 0 tracks; the other ranks get a ``NullTracker``.
    """
    from vlpeft.tracking.session import open_tracker

    if int(os.environ.get("RANK", "0")) != 0:
        return NullTracker()
    return open_tracker(params, stage, tags=tags)


@contextlib.contextmanager
def _tracked(params: Params, stage: str, tracker: Tracker | None, **tags: str) -> Iterator[Tracker]:
    """``tracker`` as given (the caller owns it), or the stage's own, opened and closed here."""
    if tracker is not None:
        yield tracker
        return
    with stage_tracker(params, stage, tags or None) as own:
        yield own


def log_results(tracker: Tracker, metrics: Mapping[str, Any], *artifacts: Path) -> None:
    """Report a stage's numeric results (flattened) and the artifacts that exist to ``tracker``."""
    numbers = {
        k: float(v)
        for k, v in flatten(dict(metrics)).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    tracker.log_metrics(numbers)
    for path in artifacts:
        if Path(path).exists():
            tracker.log_artifact(path)


def localize_backbones(params: Params, models: str | Path | None) -> Params:
    """``params`` with backbones named ``models/<part>`` read from ``models`` (the pretrain output) instead.

    ``None`` leaves the params as they are (DVC: the project root holds ``models/``). Hub ids and other
    paths are never touched.
    """
    if models is None:
        return params
    update = {}
    for name in BACKBONE_FIELDS:
        value = getattr(params.model, name)
        parts = Path(value).parts if value else ()
        if len(parts) >= 2 and parts[0] == PRETRAIN_DIR and not Path(value).is_absolute():
            update[name] = str(Path(models, *parts[1:]))
    if not update:
        return params
    return params.model_copy(update={"model": params.model.model_copy(update=update)})


def uses_pretrain(params: Params, tasks: Sequence[str] | None = None) -> bool:
    """True when the vision encoder or the backbone of one of ``tasks`` (default ``sweep.tasks``) is one of
    the pretrain stage's outputs (the embedded world)."""
    from vlpeft.tasks import get_task

    fields = ["vision"] + [get_task(t).backbone_field for t in (tasks or params.sweep.tasks)]
    return any((v := getattr(params.model, f)) and Path(v).parts[:1] == (PRETRAIN_DIR,) for f in fields)
