"""Official VQA accuracy (GT-Vision-Lab/VQA ``vqaEval.py``), computed fast and identically.

Two revisions of the official code are available (:data:`vlpeft.eval.vqa_normalize.REVISIONS`): ``master``
(the default; its last commit is a013f00, 2021-03-11) and ``legacy`` (before a013f00). They differ only in
which answers are normalized for which question (see :mod:`vlpeft.eval.vqa_normalize`); every metrics file
names the revision that produced it.

For a question with ground-truth answers a_1..a_n and a prediction r, both in the form the revision
compares them in, the official code scores each leave-one-out subset i as
``min(1, #{j in others(i): a_j == r} / 3)`` and averages the n values; ``others(i)`` are the answer *dicts*
not equal to dict i (so identical dicts leave together -- with distinct ``answer_id`` only dict i leaves).
Overall, per-answer-type and per-question-type accuracies average these per-question values in annotation
order and are ``round(100 * mean, 2)``.

We precompute the normalized ground truth once (:class:`VqaGroundTruth`), then score any number of
prediction sets; float sums are built with the same operands in the same order as the official code, so the
numbers are bit-identical, not merely close.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from vlpeft.errors import DataError
from vlpeft.eval.vqa_normalize import DEFAULT_REVISION, VqaRevision, vqa_revision


class VqaRecordLike(Protocol):
    """What :meth:`VqaGroundTruth.from_records` needs (``vlpeft.data.vqa.VqaRecord`` has it)."""

    question_id: int
    answers: list[str]
    question_type: str
    answer_type: str


class _Question(NamedTuple):  # a tuple, not a dataclass: 214k of them are built per evaluation
    answers: tuple[str, ...]  # ground truth as the revision compares it, in file order
    prediction: Callable[[str], str]  # how the revision normalizes this question's prediction
    # multiplicity of each answer dict (how many dicts equal it); None when all dicts are distinct
    multiplicity: tuple[int, ...] | None
    question_type: str
    answer_type: str


@dataclass
class VqaMetrics:
    """Accuracies in percent, rounded like the official code, plus unrounded per-question accuracies."""

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[int, float] = field(repr=False)  # accuracy in [0, 1], unrounded
    precision: int = 2
    revision: str = DEFAULT_REVISION  # which official vqaEval.py revision's rules produced these numbers

    def to_json(self) -> dict[str, Any]:
        """The metrics file content: the official ``accuracy`` dict's keys, plus ``revision``."""
        return {
            "overall": self.overall,
            "perAnswerType": self.per_answer_type,
            "perQuestionType": self.per_question_type,
            "revision": self.revision,
        }

    def per_question_json(self) -> dict[str, float]:
        """Per-question accuracy in percent, rounded like the official ``evalQA`` (keys are question ids)."""
        return {str(q): round(100 * acc, self.precision) for q, acc in self.per_question.items()}


class VqaGroundTruth:
    """Normalized ground truth of a VQA split, built once and reused for every evaluation."""

    def __init__(
        self, questions: dict[int, _Question], source: str = "annotations", revision: str = DEFAULT_REVISION
    ) -> None:
        self._questions = questions
        self.source = source
        self.revision = revision

    @classmethod
    def from_annotations(
        cls,
        annotations: Sequence[Mapping[str, Any]],
        source: str = "annotations",
        revision: str = DEFAULT_REVISION,
    ) -> VqaGroundTruth:
        """From official annotations (``question_id``, ``question_type``, ``answer_type``, ``answers``).

        ``revision`` names the official code's revision whose rules apply (``master`` or ``legacy``).
        """
        rev = vqa_revision(revision)
        questions: dict[int, _Question] = {}
        for i, ann in enumerate(annotations):
            try:  # fast path: well-formed records (the checks below cost more than the evaluation itself)
                qid, raw = ann["question_id"], ann["answers"]
                texts = list(map(_ANSWER, raw))
                "".join(texts)  # TypeError unless every answer is a string (cheaper than checking types)
                qtype, atype = ann["question_type"], ann["answer_type"]
                well_formed = type(qid) is int and bool(texts) and type(qtype) is str and type(atype) is str
            except (KeyError, TypeError, AttributeError):
                well_formed = False
            if not well_formed:
                _raise_for_annotation(ann, i, source)
            rule = rev.rule(texts)
            if qid in questions:
                raise DataError(f"{source}: question_id {qid} appears more than once")
            mult = _multiplicity(raw, rule.answers)
            questions[qid] = _Question(rule.answers, rule.prediction, mult, qtype, atype)
        return cls(questions, source, rev.name)

    @classmethod
    def from_records(
        cls, records: Iterable[VqaRecordLike], source: str = "records", revision: str = DEFAULT_REVISION
    ) -> VqaGroundTruth:
        """From loaded records whose ``answers`` are plain strings (treated as distinct answer dicts)."""
        rev = vqa_revision(revision)
        questions: dict[int, _Question] = {}
        for rec in records:
            if not rec.answers:
                raise DataError(f"{source}: question {rec.question_id} has no answers")
            rule = rev.rule(list(rec.answers))
            questions[_unique(int(rec.question_id), questions, source)] = _Question(
                answers=rule.answers,
                prediction=rule.prediction,
                multiplicity=None,
                question_type=rec.question_type,
                answer_type=rec.answer_type,
            )
        return cls(questions, source, rev.name)

    @property
    def vqa_revision(self) -> VqaRevision:
        """The official revision whose rules this ground truth follows."""
        return vqa_revision(self.revision)

    @property
    def question_ids(self) -> list[int]:
        """Question ids in annotation order (the order the official code sums in)."""
        return list(self._questions)

    def __len__(self) -> int:
        return len(self._questions)

    def __contains__(self, question_id: object) -> bool:
        return question_id in self._questions

    def score(self, predictions: Mapping[int, str], precision: int = 2) -> VqaMetrics:
        """Official accuracies of ``predictions`` (question id -> raw predicted answer).

        Every question needs exactly one prediction and no other ids are allowed, as in the official
        ``loadRes``; :func:`check_vqa_predictions` turns a results list into this mapping with clear errors.
        """
        missing = len(self._questions) - sum(1 for q in predictions if q in self._questions)
        if missing or len(predictions) != len(self._questions):
            raise DataError(
                f"predictions do not match {self.source}: {missing} question(s) without a prediction, "
                f"{len(predictions) - len(self._questions) + missing} unknown question id(s)"
            )
        per_question: dict[int, float] = {}
        # defaultdicts keep first-seen key order, as the official dicts do, without a new [] per question
        by_qtype: defaultdict[str, list[float]] = defaultdict(list)
        by_atype: defaultdict[str, list[float]] = defaultdict(list)
        for qid, (answers, normalize, multiplicity, qtype, atype) in self._questions.items():
            pred = normalize(predictions[qid])
            # inlined answer_accuracy (this loop runs 214k times per evaluation): 0 and >= 4 matches first
            matches = answers.count(pred)
            if matches == 0:
                acc = 0.0
            elif multiplicity is not None:
                acc = _accuracy_with_multiplicity(answers, multiplicity, pred, matches)
            elif matches >= _ALWAYS_FULL:
                acc = 1.0
            else:
                gt_acc = [min(1, (matches - (a == pred)) / 3) for a in answers]
                acc = float(sum(gt_acc)) / len(gt_acc)
            per_question[qid] = acc
            by_qtype[qtype].append(acc)
            by_atype[atype].append(acc)
        return VqaMetrics(
            overall=_percent(list(per_question.values()), precision),
            per_answer_type={t: _percent(v, precision) for t, v in by_atype.items()},
            per_question_type={t: _percent(v, precision) for t, v in by_qtype.items()},
            per_question=per_question,
            precision=precision,
            revision=self.revision,
        )


_ANSWER, _ANSWER_ID = operator.itemgetter("answer"), operator.itemgetter("answer_id")
# With 4 or more matches every leave-one-out subset keeps >= 3, so each term is the int 1 and the official
# float(sum)/len is exactly 1.0: skipping the sum gives the same bits.
_ALWAYS_FULL = 4


def answer_accuracy(answers: Sequence[str], prediction: str) -> float:
    """Official accuracy of ``prediction`` among ``answers``, both already in the form they are compared in.

    The mean over the leave-one-out subsets of ``min(1, #matches in the subset / 3)``, each answer a distinct
    annotator (as with VQAv2's distinct ``answer_id``): 1 of 10 matching -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1.
    Same operands and summation order as the official code, so the float is bit-identical.
    """
    matches = answers.count(prediction)
    if matches == 0:
        return 0.0
    if matches >= _ALWAYS_FULL:
        return 1.0
    gt_acc = [min(1, (matches - (a == prediction)) / 3) for a in answers]
    return float(sum(gt_acc)) / len(gt_acc)


def _accuracy_with_multiplicity(
    answers: tuple[str, ...], multiplicity: tuple[int, ...], pred: str, matches: int
) -> float:
    """Leave-one-out mean when some answer dicts are equal: subset i drops all ``multiplicity[i]`` copies."""
    pairs = zip(answers, multiplicity, strict=True)
    gt_acc = [min(1, (matches - (m if a == pred else 0)) / 3) for a, m in pairs]
    return float(sum(gt_acc)) / len(gt_acc)


def _percent(values: list[float], precision: int) -> float:
    # Same expression as the official setAccuracy: round(100*float(sum(x))/len(x), n).
    return round(100 * float(sum(values)) / len(values), precision)


def _multiplicity(raw: list[Mapping[str, Any]], answers: tuple[str, ...]) -> tuple[int, ...] | None:
    """How many answer dicts equal each one after normalization (the official ``item != gtAnsDatum``)."""
    try:
        if len(set(map(_ANSWER_ID, raw))) == len(raw):
            return None  # distinct answer ids: every dict differs from every other (the normal case)
    except (KeyError, TypeError):  # an answer without an id, or unhashable ids: compare the dicts
        pass
    dicts = [{**a, "answer": ans} for a, ans in zip(raw, answers, strict=True)]
    mult = tuple(sum(1 for other in dicts if other == d) for d in dicts)
    return None if all(m == 1 for m in mult) else mult


def _question_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: 'question_id' must be an integer, got {value!r}")
    return value


def _unique(qid: int, seen: Mapping[int, Any], source: str) -> int:
    if qid in seen:
        raise DataError(f"{source}: question_id {qid} appears more than once")
    return qid


def _raise_for_annotation(ann: Any, i: int, source: str) -> None:
    """Name what is wrong with a malformed annotation record (slow path, only on bad input)."""
    if not isinstance(ann, Mapping):
        raise DataError(f"{source}: annotation {i} is not an object")
    qid = _question_id(ann.get("question_id"), f"{source}: annotation {i}")
    raw = ann.get("answers")
    if not isinstance(raw, list) or not raw or not all(isinstance(a, Mapping) for a in raw):
        raise DataError(f"{source}: question {qid}: 'answers' must be a non-empty list of objects")
    if not all(isinstance(a.get("answer"), str) for a in raw):
        raise DataError(f"{source}: question {qid}: every answer must have a string 'answer'")
    for key in ("question_type", "answer_type"):
        if not isinstance(ann.get(key), str):
            raise DataError(f"{source}: question {qid}: '{key}' must be a string, got {ann.get(key)!r}")
    raise DataError(f"{source}: annotation {i} is malformed")


def _checked_result(entry: Any, i: int, source: str) -> tuple[int, str]:
    """(question id, answer) of a results entry, or the one-line error naming what is wrong (slow path)."""
    if not isinstance(entry, Mapping):
        raise DataError(f"{source}: entry {i} is not an object")
    qid = _question_id(entry.get("question_id"), f"{source}: entry {i}")
    if "answer" not in entry:
        raise DataError(f"{source}: entry {i} (question_id {qid}) has no 'answer'")
    answer = entry["answer"]
    if not isinstance(answer, str):
        problem = "is null" if answer is None else f"must be a string, got {type(answer).__name__}"
        raise DataError(f"{source}: entry {i} (question_id {qid}): answer {problem}")
    return qid, answer


def check_vqa_predictions(results: Any, gt: VqaGroundTruth, source: str = "predictions") -> dict[int, str]:
    """Validate an official results list (``[{question_id, answer}]``) against ``gt``; return id -> answer.

    Raises a one-line :class:`DataError` naming ``source`` for: not a list, an entry that is not an object,
    a missing/non-integer ``question_id``, a missing/null/non-string ``answer``, a duplicate id, an id that is
    not in the ground truth, or ground-truth ids without a prediction.
    """
    if not isinstance(results, list):
        raise DataError(
            f"{source}: expected a list of {{question_id, answer}} objects, got {type(results).__name__}"
        )
    preds: dict[int, str] = {}
    for i, entry in enumerate(results):
        try:  # fast path: a well-formed entry (building error context for every entry costs more)
            qid, answer = entry["question_id"], entry["answer"]
            well_formed = type(qid) is int and type(answer) is str
        except (KeyError, TypeError, IndexError):
            well_formed = False
        if not well_formed:
            qid, answer = _checked_result(entry, i, source)
        if qid in preds:
            raise DataError(f"{source}: question_id {qid} appears more than once")
        preds[qid] = answer
    unknown = [q for q in preds if q not in gt]
    if unknown:
        raise DataError(f"{source}: {len(unknown)} question id(s) not in {gt.source}, e.g. {unknown[0]}")
    if len(preds) != len(gt):
        absent = [q for q in gt.question_ids if q not in preds]
        raise DataError(
            f"{source}: no prediction for {len(absent)} of {len(gt)} question ids in {gt.source}, "
            f"e.g. {absent[0]}"
        )
    return preds


def evaluate_vqa(
    annotations: Sequence[Mapping[str, Any]],
    results: Any,
    precision: int = 2,
    source: str = "predictions",
    revision: str = DEFAULT_REVISION,
) -> VqaMetrics:
    """Records in, metrics out: official annotations + official results list -> :class:`VqaMetrics`."""
    gt = VqaGroundTruth.from_annotations(annotations, revision=revision)
    return gt.score(check_vqa_predictions(results, gt, source), precision)
