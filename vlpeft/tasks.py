"""The task table: what the pipeline knows about each task, as data.

Every place that used to check ``task in ("vqa", "caption")`` asks this table instead, so adding a task
is one ``TaskSpec`` entry here plus its binding module. This module is a leaf (it imports nothing of
``vlpeft`` but the error types), so ``config``, the CLI, ``train``, ``sweep`` and ``models`` can all use it.

Terms:

- a **task** is what ``vlpeft train --task`` trains (one params section, one trained model, one registry
  name);
- a **family** is the kind of VL model a task builds (``models/``: ``vqa`` = encoder + classifier,
  ``caption`` = decoder captioner, ``generative`` = encoder-decoder); each family names the
  ``params.model`` field that holds its language backbone.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from typing import Any, Literal

from vlpeft.errors import ConfigError

Direction = Literal["maximize", "minimize"]

# The params.model field that names each family's language backbone (one owner of this fact).
FAMILY_BACKBONE: dict[str, str] = {
    "vqa": "vqa_backbone",
    "caption": "caption_backbone",
    "generative": "generative_backbone",
}


@dataclass(frozen=True)
class PyfuncSpec:
    """How the registered model of a task is called (``vlpeft.tracking.pyfunc_model``).

    ``inputs`` are the input columns in the order of the arguments of the ``Predictor`` method ``method``
    (``vlpeft.train.predict``); ``optional`` columns may be absent or empty (the method then gets ``None``
    or ``""``); ``images`` are the columns holding images (base64 or file paths); ``output`` is the one
    output column.
    """

    method: str
    inputs: tuple[str, ...]
    output: str
    optional: frozenset[str] = frozenset()
    images: frozenset[str] = frozenset({"image"})


@dataclass(frozen=True)
class TaskSpec:
    """One trainable task.

    ``binding`` is ``"module:function"`` of the builder that turns (params, model, data) into the object the
    training loop drives (imported only when a task is built). ``metric`` is the per-epoch validation value
    the best checkpoint and the sweep follow, with its ``direction``; when the task's section has
    ``loss_fallback`` set to 0 (e.g. ``caption.val_cider_images: 0``), validation falls back to
    ``val_loss``, minimised. ``test_metric`` is the headline key of the test metrics (tables, reviews).

    Registry: ``pyfunc`` says how a registered model is called (``None``: the task cannot be registered);
    ``tag_metrics`` are the test metrics copied to version tags (``fnmatch`` patterns of the flat keys of
    ``vlpeft.tracking.registry.headline_metrics``; promotions report their deltas); a multi-task model's test
    metrics hold one section per trained task, and ``per_task_metric`` is the key in each that enters the
    headline average (the review's per-task table).
    """

    name: str
    section: str
    family: str
    binding: str
    loss: str
    metric: str
    direction: Direction
    test_metric: str
    registry_field: str
    pyfunc: PyfuncSpec | None
    tag_metrics: tuple[str, ...]
    sweepable: bool = True
    loss_fallback: str | None = None
    per_task_metric: str | None = None

    @property
    def registrable(self) -> bool:
        """True when models of this task can be registered (it has a pyfunc)."""
        return self.pyfunc is not None

    @property
    def backbone_field(self) -> str:
        """The ``params.model`` field of this task's language backbone."""
        return FAMILY_BACKBONE[self.family]

    def section_of(self, params: Any) -> Any:
        """This task's training section of a ``Params``."""
        return getattr(params, self.section)

    def validation(self, section: Any) -> tuple[str, bool]:
        """``(metric name, greater is better)`` the trainer validates on, given the task's section."""
        if self.loss_fallback is not None and getattr(section, self.loss_fallback, 1) == 0:
            return "val_loss", False
        return self.metric, self.direction == "maximize"

    def build_binding(self, *args: Any, **kwargs: Any) -> Any:
        """Import and call the task's binding builder."""
        module, _, name = self.binding.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="vqa",
            section="vqa",
            family="vqa",
            binding="vlpeft.train.tasks:build_vqa_task",
            loss="BCE on the official soft scores over the answer vocabulary",
            metric="val_accuracy",
            direction="maximize",
            test_metric="overall",
            registry_field="vqa_name",
            pyfunc=PyfuncSpec(method="answers", inputs=("image", "question"), output="answer"),
            tag_metrics=("overall", "perAnswerType.*"),
        ),
        TaskSpec(
            name="caption",
            section="caption",
            family="caption",
            binding="vlpeft.train.tasks:build_caption_task",
            loss="per-token cross-entropy of every caption token and EOS",
            metric="val_cider",
            direction="maximize",
            test_metric="CIDEr",
            registry_field="caption_name",
            pyfunc=PyfuncSpec(method="captions", inputs=("image",), output="caption"),
            tag_metrics=("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE"),
            loss_fallback="val_cider_images",
        ),
        TaskSpec(
            name="multitask",
            section="multitask",
            family="generative",
            binding="vlpeft.train.multitask.data:build_multitask",
            loss="per step one task's batch: VQA sampled-answer CE x soft score, GQA/NLVR2 per-sample CE, "
            "captions per-token CE (VL-Adapter)",
            metric="val_average",
            direction="maximize",
            test_metric="average",
            registry_field="multitask_name",
            # One row = one task's input: ``task`` (vqa, gqa, nlvr, caption), the image, the question or
            # NLVR2 statement (empty for captions) and NLVR2's second image.
            pyfunc=PyfuncSpec(
                method="outputs",
                inputs=("task", "image", "question", "image2"),
                output="output",
                optional=frozenset({"question", "image2"}),
                images=frozenset({"image", "image2"}),
            ),
            tag_metrics=("average", "*.score", "vqa.overall", "nlvr.consistency", "caption.CIDEr"),
            sweepable=False,
            per_task_metric="score",
        ),
    )
}


def list_tasks(*, sweepable: bool | None = None) -> list[str]:
    """Task names in table order (``sweepable=True``: only those the sweep can search)."""
    return [n for n, s in TASKS.items() if sweepable is None or s.sweepable == sweepable]


def get_task(name: str, *, what: str = "task") -> TaskSpec:
    """The spec of ``name``; an unknown name is a ``ConfigError`` naming ``what`` and the choices."""
    spec = TASKS.get(name)
    if spec is None:
        raise ConfigError(f"{what}: {name!r} is not one of {', '.join(TASKS)}")
    return spec


# The task names as an Enum, for CLI options: typer lists its values as the choices in ``--help`` and
# refuses anything else. Built from the table, so a new entry is a new choice.
TaskName = enum.Enum("TaskName", {name: name for name in TASKS}, type=str)  # type: ignore[misc]
SweepTaskName = enum.Enum("SweepTaskName", {n: n for n in list_tasks(sweepable=True)}, type=str)  # type: ignore[misc]
