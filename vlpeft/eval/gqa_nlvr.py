"""GQA and NLVR2 scores: pure functions of (ground truth, predictions).

- GQA: exact match of the predicted answer with the label, no normalisation (VL-Adapter's
  ``GQAEvaluator``: ``label[pred]`` with single-answer labels of score 1).
- NLVR2: accuracy, and consistency as lil-lab/nlvr ``nlvr2/eval/metrics.py`` computes it: examples are grouped
  by their identifier with its third field (the pair id) blanked, i.e. one sentence over all image pairs of a
  set, and a group is consistent when every one of its predictions is right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vlpeft.errors import DataError


def _check_covered(truth: Mapping[str, object], predictions: Mapping[str, object], what: str) -> None:
    missing = [k for k in truth if k not in predictions]
    if missing:
        raise DataError(f"{what}: {len(missing)} of {len(truth)} have no prediction (first: {missing[0]!r})")


def gqa_accuracy(answers: Mapping[str, str], predictions: Mapping[str, str]) -> float:
    """Percent of questions (question id -> answer) whose prediction equals the answer exactly."""
    if not answers:
        raise DataError("GQA: no questions to score")
    _check_covered(answers, predictions, "GQA predictions")
    return 100.0 * sum(predictions[q] == a for q, a in answers.items()) / len(answers)


def consistency_group(identifier: str) -> str:
    """The consistency group of an NLVR2 identifier ``split-set-pair-sentence``: the pair id blanked."""
    parts = identifier.split("-")
    if len(parts) < 4:
        raise DataError(f"NLVR2 identifier {identifier!r} is not split-set-pair-sentence")
    parts[2] = ""
    return "-".join(parts)


def nlvr_scores(labels: Mapping[str, bool], predictions: Mapping[str, bool]) -> dict[str, float]:
    """``{"accuracy", "consistency"}`` in percent; ``labels`` / ``predictions``: identifier -> true/false."""
    if not labels:
        raise DataError("NLVR2: no statements to score")
    _check_covered(labels, predictions, "NLVR2 predictions")
    groups: dict[str, bool] = {}
    correct = 0
    for identifier, label in labels.items():
        right = bool(predictions[identifier]) == bool(label)
        correct += right
        key = consistency_group(identifier)
        groups[key] = groups.get(key, True) and right
    return {
        "accuracy": 100.0 * correct / len(labels),
        "consistency": 100.0 * sum(groups.values()) / len(groups),
    }


def table1_average(scores: Sequence[float]) -> float:
    """VL-Adapter's Table 1 "avg": the mean of the task scores (VQA, GQA, NLVR2 accuracy, CIDEr x 100)."""
    if not scores:
        raise DataError("no task scores to average")
    return sum(scores) / len(scores)
