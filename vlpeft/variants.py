"""The final variants as data: ``params.yaml``'s ``variants:`` table and ``seeds:`` list, resolved per run.

Every task trains each variant once per seed. A variant is a set of dotted overrides applied over the sweep's
best values (``best_params.json``); ``task.`` stands for the trained task's own section::

    variants:
      best: {}                                  # the sweep's best routing / rank / lr
      norouting: {task.peft.routing: none}      # the same with plain LoRA (visual prefix kept)
      blind: {task.peft.routing: none, model.visual_prefix: false}   # no image at all
    seeds: [0]

``resolve_variant`` is the one place that turns (params, task, variant, seed) into the ``Params`` a run trains
with; the ``train`` CLI (DVC) and the Kubeflow pipeline both call it, and ``final_runs`` lists the runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlpeft.config import TASK_SECTION, Params, Task, deep_merge, params_from_dict, params_to_dict
from vlpeft.errors import ConfigError
from vlpeft.tasks import get_task, list_tasks


@dataclass(frozen=True)
class FinalRun:
    """One training run of the final comparison: a task, a variant of it and a seed."""

    task: Task
    variant: str
    seed: int

    @property
    def name(self) -> str:
        """``<task>-<variant>-<seed>``: the DVC stage key (``train@vqa-best-0``) and the output dir name."""
        return run_name(self.task, self.variant, self.seed)


def run_name(task: str, variant: str, seed: int) -> str:
    """The name of one final run, as dvc.yaml's matrix spells it: ``vqa-best-0``."""
    return f"{task}-{variant}-{seed}"


def parse_run_name(name: str) -> FinalRun:
    """The inverse of ``run_name``; a name that is not ``<task>-<variant>-<seed>`` is a ``ConfigError``."""
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or parts[0] not in list_tasks() or not parts[2].lstrip("-").isdigit():
        raise ConfigError(f"{name!r}: not a final run name <task>-<variant>-<seed> (e.g. vqa-best-0)")
    return FinalRun(parts[0], parts[1], int(parts[2]))


def final_runs(params: Params, tasks: tuple[Task, ...] = ("vqa", "caption")) -> list[FinalRun]:
    """Every (task, variant, seed) of the final comparison, in the order dvc.yaml's matrix lists them
    (``tasks``: the tasks dvc.yaml's matrix trains)."""
    return [FinalRun(t, v, s) for t in tasks for v in params.variants for s in params.seeds]


def variant_update(task: Task, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted overrides as a nested params mapping, ``task.`` replaced by the task's section name."""
    update: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == TASK_SECTION:
            parts[0] = get_task(task).section
        node: Any = value
        for part in reversed(parts):
            node = {part: node}
        update = deep_merge(update, node)
    return update


def resolve_variant(
    params: Params,
    task: Task,
    variant: str | None,
    seed: int | None = None,
    sweep_best: Mapping[str, Any] | None = None,
) -> Params:
    """The ``Params`` one final run trains with: ``sweep_best`` (a ``best_params.json`` mapping), then the
    variant's overrides (``None``: none), then ``<task>.seed = seed`` (``None``: the task's own), validated.

    An unknown variant or a value the variant makes invalid is a ``ConfigError`` naming the variant.
    """
    section = get_task(task).section  # an unknown task is a ConfigError naming the choices
    if variant is not None and variant not in params.variants:
        raise ConfigError(f"variant {variant!r}: not in params variants (have: {', '.join(params.variants)})")
    merged = params_to_dict(params)
    if sweep_best:
        merged = deep_merge(merged, dict(sweep_best))
    if variant is not None:
        merged = deep_merge(merged, variant_update(task, params.variants[variant]))
    if seed is not None:
        merged = deep_merge(merged, {section: {"seed": seed}})
    where = (
        f"{'variants.' + variant if variant else 'params'} ({task}{'' if seed is None else f', seed {seed}'})"
    )
    return params_from_dict(merged, where, resolving=True)


def check_variants(params: Params) -> None:
    """Resolve every variant of every task once, so that a bad override value fails when params load.

    Also checks that ``registry.variant`` (whose run dvc.yaml and the Kubeflow pipeline register) is one.
    Raises ``ValueError`` (the config validator turns it into one error line).
    """
    for task in list_tasks():
        for variant in params.variants:
            try:
                resolve_variant(params, task, variant)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
    if params.registry.variant not in params.variants:
        raise ValueError(
            f"registry.variant {params.registry.variant!r} is not a variant "
            f"(variants: {', '.join(params.variants)}); set registry.variant to the one to register"
        )
