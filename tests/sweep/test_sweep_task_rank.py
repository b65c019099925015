"""``sweep.rank: null``: every trial trains at the task's own rank, so ``-S vqa.peft.rank=16`` reaches the
sweep, its best_params.json and every final variant."""

from __future__ import annotations

import pytest

from vlpeft.config import params_from_dict
from vlpeft.errors import ConfigError
from vlpeft.sweep.space import covering_points, searched, trial_params, with_task_rank
from vlpeft.variants import resolve_variant


def test_null_rank_is_the_tasks_rank_everywhere():
    params = params_from_dict({"vqa": {"peft": {"rank": 16}}, "sweep": {"rank": None, "n_trials": 3}})
    with pytest.raises(ConfigError, match="with_task_rank"):
        searched(params.sweep)
    filled = with_task_rank(params, "vqa")
    assert filled.sweep.rank == [16] and with_task_rank(params, "caption").sweep.rank == [8]
    points = covering_points(filled.sweep)
    assert [(p["routing"], p["rank"]) for p in points] == [("none", 16), ("mul", 16), ("vl", 16)]
    trial = trial_params(filled, "vqa", points[1])
    assert (trial.vqa.peft.rank, trial.vqa.peft.routing) == (16, "mul")
    best = resolve_variant(params, "vqa", "norouting", 0, {"vqa": {"peft": {"rank": 16, "routing": "mul"}}})
    assert (best.vqa.peft.rank, best.vqa.peft.routing) == (16, "none")


def test_explicit_ranks_are_kept():
    params = params_from_dict({"sweep": {"rank": [4, 8]}})
    assert with_task_rank(params, "vqa") is params
