"""Sampler and pruner of a sweep, from ``params.sweep``."""

from __future__ import annotations

import optuna

from vlpeft.config import Params, SweepConfig
from vlpeft.sweep.space import covering_points
from vlpeft.tasks import get_task


def make_sampler(sweep: SweepConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """TPE (default), random, or — for ``grid``, whose points are all queued as fixed slots — random.

    Each worker gets its own seed (``sampler_seed + worker_index``): identical seeds would make concurrent
    workers propose the same point. TPE treats the covering points as its start-up trials.
    """
    seed = None if sweep.sampler_seed is None else sweep.sampler_seed + worker_index
    if sweep.sampler == "tpe":
        startup = len(covering_points(sweep)) if sweep.cover_first else 10
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, startup))
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
    """Median pruning on the per-epoch validation value, or none."""
    if sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=sweep.pruner_startup_trials, n_warmup_steps=sweep.pruner_warmup_steps
    )


def study_direction(params: Params, task: str) -> str:
    """``sweep.direction``, with ``auto`` resolved from what the trainer validates on for ``task``.

    The direction is the task's validation metric's (``vlpeft.tasks``), e.g. VQA accuracy and CIDEr are
    maximised, captioning with ``val_cider_images: 0`` validates on the loss, minimised.
    """
    if params.sweep.direction != "auto":
        return params.sweep.direction
    spec = get_task(task)
    _, greater = spec.validation(spec.section_of(params))
    return "maximize" if greater else "minimize"
