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
class TaskSpec:
    """One trainable task.

    ``binding`` is ``"module:function"`` of the builder that turns (params, model, data) into the object the
    training loop drives (imported only when a task is built). ``metric`` is the per-epoch validation value
    the best checkpoint and the sweep follow, with its ``direction``; when the task's section has
    ``loss_fallback`` set to 0 (e.g. ``caption.val_cider_images: 0``), validation falls back to
    ``val_loss``, minimised. ``test_metric`` is the headline key of the test metrics (tables, reviews).
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
    sweepable: bool = True
    registrable: bool = True
    loss_fallback: str | None = None

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
            sweepable=False,
            registrable=False,  # no pyfunc/review for the generative family yet
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
