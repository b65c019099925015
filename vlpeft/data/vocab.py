"""The VQA answer vocabulary and its training targets, computed with the official evaluation's own functions.

One owner per rule: answers are normalized by :func:`vlpeft.eval.normalize_answer` and scored by
:func:`vlpeft.eval.answer_accuracy` (the leave-one-out rule: 1 of 10 annotators -> 0.3, 2 -> 0.6, 3 -> 0.9,
4 or more -> 1.0), the functions the evaluator uses and its tests check against the official code.

The vocabulary *always* normalizes, deliberately: "Two", "two" and "2" are one class, and a question's
target gives each class the official accuracy its normalized form would get if every answer were
normalized (the ``legacy`` rule for the prediction, and ``master``'s rule for a question whose answers
disagree). The official code on master leaves a question whose (cleaned) answers are all identical
unnormalized, so there a class scores 0 unless its normalized form equals the answer as written (ten
"t-shirt": the class "t shirt" scores 0 at evaluation; in the embedded world every answer is already in
normalized form, so this never happens there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from vlpeft.errors import DataError
from vlpeft.eval.vqa import answer_accuracy
from vlpeft.eval.vqa_normalize import normalize_answer
from vlpeft.io import read_json, write_json


class _HasAnswer(Protocol):
    multiple_choice_answer: str


class AnswerVocab:
    """Answer strings of the VQA classifier, built from the training answers."""

    def __init__(self, answers: Sequence[str], meta: dict[str, Any] | None = None) -> None:
        self.answers: list[str] = list(answers)
        if len(set(self.answers)) != len(self.answers):
            raise DataError("answer vocabulary has duplicate entries")
        self._index = {a: i for i, a in enumerate(self.answers)}
        self.meta = dict(meta or {})

    @classmethod
    def build(
        cls, records: Iterable[_HasAnswer], min_count: int = 1, top_k: int | None = 3129
    ) -> AnswerVocab:
        """The ``top_k`` most frequent (normalized) ``multiple_choice_answer``s seen >= ``min_count`` times.

        This is the usual VQAv2 recipe (answers occurring >= 9 times in train+val give 3129 classes); ties in
        frequency are broken alphabetically so the vocabulary is deterministic.
        """
        counts = Counter(normalize_answer(r.multiple_choice_answer) for r in records)
        if not counts:
            raise DataError("cannot build an answer vocabulary from zero VQA records")
        kept = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
        if top_k is not None:
            kept = kept[:top_k]
        if not kept:
            raise DataError(f"no answer occurs at least {min_count} times (vocab_min_count)")
        meta = {"min_count": min_count, "top_k": top_k, "counts": {a: counts[a] for a in kept}}
        return cls(kept, meta)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: object) -> bool:
        return isinstance(answer, str) and normalize_answer(answer) in self._index

    def index(self, answer: str) -> int:
        """Class index of an answer (normalized first); KeyError if it is not in the vocabulary."""
        return self._index[normalize_answer(answer)]

    def soft_scores(self, answers: Sequence[str]) -> dict[str, float]:
        """Official accuracy of each distinct normalized answer among ``answers`` (in vocab or not)."""
        norm = [normalize_answer(a) for a in answers]
        return {a: answer_accuracy(norm, a) for a in dict.fromkeys(norm)}

    def target_vector(self, answers: Sequence[str]) -> torch.Tensor:
        """Float32 vector of length ``len(self)``: soft score per vocabulary answer (0 for unseen answers)."""
        target = torch.zeros(len(self.answers), dtype=torch.float32)
        for answer, score in self.soft_scores(answers).items():
            i = self._index.get(answer)
            if i is not None:
                target[i] = score
        return target

    def save(self, path: str | Path) -> None:
        """Write ``{"answers": [...], ...meta}`` as JSON (atomically)."""
        write_json(path, {"answers": self.answers, **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocab:
        """Read a vocabulary written by ``save``."""
        data = read_json(path, "answer vocabulary")
        answers = data.get("answers") if isinstance(data, dict) else None
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers) or not answers:
            raise DataError(f"{path}: field 'answers' must be a non-empty list of strings")
        return cls(answers, {k: v for k, v in data.items() if k != "answers"})
