"""The search space: what a trial samples, the queue of trial slots, and how values map onto ``Params``.

Pure functions of the config (and of an Optuna trial for sampling); no I/O.
"""

from __future__ import annotations

import itertools
from typing import Any

from vlpeft.config import Params, SweepConfig, Task, deep_merge, params_from_dict, params_to_dict
from vlpeft.errors import ConfigError

PEFT_KEYS = ("rank", "routing", "method")  # trial values that live under <task>.peft
# Keys of the task's section that every trial sets itself (``trial_params``), so the sweep never reads them
# from params (its stage declaration ignores them, vlpeft.stages.search): the routing (always searched) and
# the epochs (``sweep.epochs``). Rank, method, lr, max_train_samples and seed are replaced only for some sweep
# settings (e.g. ``sweep.rank: null`` trains the task's own rank), so the sweep does read them.
TRIAL_OVERRIDES = ("peft.routing", "epochs")


def with_task_rank(params: Params, task: Task) -> Params:
    """``sweep.rank: null`` = the task's own ``peft.rank``: filled in once, before the study is prepared."""
    if params.sweep.rank is not None:
        return params
    rank = [params.task(task).peft.rank]
    return params.model_copy(update={"sweep": params.sweep.model_copy(update={"rank": rank})})


def searched(sweep: SweepConfig) -> dict[str, list[Any]]:
    """The categorical dimensions of the space: routing and rank always; method when it has 2+ values."""
    if sweep.rank is None:
        raise ConfigError("sweep.rank: null is the task's rank: resolve it with with_task_rank first")
    space: dict[str, list[Any]] = {"routing": list(sweep.routing), "rank": list(sweep.rank)}
    if len(sweep.method) > 1:
        space["method"] = list(sweep.method)
    return space


def lr_mode(sweep: SweepConfig) -> str:
    """How the learning rate is treated: ``task`` (not searched), ``fixed``, ``range`` or ``choice``."""
    if sweep.lr is None:
        return "task"
    if len(sweep.lr) == 1:
        return "fixed"
    if sweep.sampler != "grid" and len(sweep.lr) == 2:
        return "range"
    return "choice"


def suggest(trial: Any, sweep: SweepConfig) -> dict[str, Any]:
    """Sample (or read back, for queued trials with fixed values) one point of the space from ``trial``."""
    values: dict[str, Any] = {
        name: trial.suggest_categorical(name, choices) for name, choices in searched(sweep).items()
    }
    mode = lr_mode(sweep)
    if mode == "range":
        assert sweep.lr is not None
        values["lr"] = trial.suggest_float("lr", sweep.lr[0], sweep.lr[1], log=True)
    elif mode == "choice":
        values["lr"] = trial.suggest_categorical("lr", list(sweep.lr or []))
    elif mode == "fixed":
        values["lr"] = float((sweep.lr or [0])[0])
    return values


def grid_points(sweep: SweepConfig) -> list[dict[str, Any]]:
    """Every combination of the categorical dimensions (and lr points for sampler ``grid``)."""
    space = searched(sweep)
    if lr_mode(sweep) == "choice":
        space["lr"] = list(sweep.lr or [])
    names = list(space)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*space.values())]


def covering_points(sweep: SweepConfig) -> list[dict[str, Any]]:
    """A few points that together visit every routing, rank (and method) value at least once.

    Point ``i`` takes the ``i``-th value of each dimension (cyclically), so ``max(len(dim))`` points suffice
    and the routing × rank table of a small sweep is never missing a whole row or column.
    """
    space = searched(sweep)
    n = max(len(v) for v in space.values())
    return [{name: choices[i % len(choices)] for name, choices in space.items()} for i in range(n)]


def queue_plan(sweep: SweepConfig, n_trials: int, base_seed: int) -> list[tuple[dict[str, Any], int]]:
    """The trial slots to enqueue: ``(fixed values, seed)`` per slot, ``n_trials`` of them.

    ``grid``: the grid points in order, repeated with seeds ``base_seed + 1, + 2, …`` when ``n_trials`` is
    larger than the grid (so repeated cells give a mean ± std over seeds). ``tpe``/``random``: the covering
    points first (when ``cover_first``), then empty slots the sampler fills.
    """
    if sweep.sampler == "grid":
        grid = grid_points(sweep)
        return [(grid[i % len(grid)], base_seed + i // len(grid)) for i in range(n_trials)]
    fixed = covering_points(sweep) if sweep.cover_first else []
    return [(fixed[i] if i < len(fixed) else {}, base_seed) for i in range(n_trials)]


def value_overrides(task: Task, values: dict[str, Any]) -> dict[str, Any]:
    """The searched values as a params mapping, e.g. ``{"vqa": {"peft": {"rank": 8, ...}, "lr": 1e-3}}``.

    This is exactly what ``best_params.json`` holds for the task.
    """
    section: dict[str, Any] = {"peft": {k: values[k] for k in PEFT_KEYS if k in values}}
    if "lr" in values:
        section["lr"] = float(values["lr"])
    return {task: section}


def trial_params(params: Params, task: Task, values: dict[str, Any], seed: int | None = None) -> Params:
    """A copy of ``params`` whose task section trains one trial: the values, sweep epochs and sample cap.

    With ``sweep.scale_alpha`` the LoRA alpha moves with the rank so that ``s = alpha / r`` stays fixed.
    """
    sweep = params.sweep
    section = params.task(task)
    update = value_overrides(task, values)
    run = update[task]
    run["epochs"] = sweep.epochs
    if sweep.max_train_samples is not None:
        run["max_train_samples"] = sweep.max_train_samples
    if seed is not None:
        run["seed"] = seed
    if sweep.scale_alpha and "rank" in values:
        run["peft"]["alpha"] = section.peft.alpha * values["rank"] / section.peft.rank
    return params_from_dict(deep_merge(params_to_dict(params), update), f"sweep trial {values}")
