"""The review's verdict weighs the difference against the seed spread and never calls noise a win."""

from __future__ import annotations

import json

import pytest

from vlpeft.tasks import get_task
from vlpeft.tracking.registry import VersionInfo, seed_tags
from vlpeft.tracking.report import verdict
from vlpeft.tracking.review import Review, Side


def _side(label: str, overall: float, seeds: int | None = None, std: float | None = None) -> Side:
    tags = {"seeds": str(seeds)} if seeds else {}
    if std is not None:
        tags["metric_std.overall"] = f"{std:.4f}"
    return Side(label, VersionInfo("m", label[-1], None, "s", tags), {"overall": overall}, {})


def _review(*sides: Side) -> Review:
    return Review(name="m", task="vqa", sides=list(sides), samples=[], uri="sqlite://")


@pytest.mark.parametrize(
    "old,new,expected",
    [
        # +0.5 against a spread of ±1.41 (two seeds of std 1 each): noise
        (_side("champion v1", 70.0, 3, 1.0), _side("challenger v2", 70.5, 3, 1.0), "No clear difference"),
        (_side("champion v1", 70.0, 3, 1.0), _side("challenger v2", 68.9, 3, 1.0), "No clear difference"),
        # +3 beyond ±1.41: a real difference, both ways
        (_side("champion v1", 70.0, 3, 1.0), _side("challenger v2", 73.0, 3, 1.0), "Challenger is better"),
        (_side("champion v1", 70.0, 3, 1.0), _side("challenger v2", 67.0, 3, 1.0), "Challenger is worse"),
        # single seeds (or a spread on one side only): never a verdict
        (_side("champion v1", 70.0), _side("challenger v2", 80.0), "not evidence"),
        (_side("champion v1", 70.0, 3, 0.1), _side("challenger v2", 80.0, 1), "not evidence"),
    ],
)
def test_verdict_against_the_seed_spread(old, new, expected):
    text = verdict(_review(old, new))
    assert expected in text
    assert "better" not in text or expected == "Challenger is better"
    if "spread ±" in text:
        assert "±1.41" in text and "3 vs 3 seeds" in text


def test_seed_tags_are_the_spread_of_the_variants_seeds(tmp_path):
    runs = {"vqa-mul-0": 70.0, "vqa-mul-1": 72.0, "vqa-mul-2": 74.0, "vqa-none-0": 10.0}
    for name, overall in runs.items():
        (tmp_path / name).mkdir()
        metrics = {"task": "vqa", "variant": name.split("-")[1], "train": {"lr": 0.001},
                   "test": {"overall": overall, "perAnswerType": {"yes_no": overall}}}  # fmt: skip
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "vqa-mul-lr" / "").mkdir()  # another learning rate: not a seed of this variant
    other_lr = {"task": "vqa", "variant": "mul", "train": {"lr": 0.01}, "test": {"overall": 0.0}}
    (tmp_path / "vqa-mul-lr" / "metrics.json").write_text(json.dumps(other_lr))
    tags = seed_tags(get_task("vqa"), tmp_path / "vqa-mul-0")
    assert tags["seeds"] == "3"
    assert tags["metric_mean.overall"] == "72.0000" and tags["metric_std.overall"] == "2.0000"
    single = seed_tags(get_task("vqa"), tmp_path / "vqa-none-0")
    assert single == {"seeds": "1"}
