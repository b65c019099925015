"""The VQA answer vocabulary and soft scores (official VQA accuracy rule).

Soft score of answer ``a`` given the annotators' answers: the mean, over the leave-one-out subsets (10 for
VQAv2), of ``min(1, #matches in the subset / 3)``. With ``m`` of ``n`` annotators saying ``a`` this is
``(m * min(1, (m-1)/3) + (n-m) * min(1, m/3)) / n``: 1 match -> 0.3, 2 -> 0.6, 3 -> 0.9, >= 4 -> 1.0.

Answers are compared after ``normalize_answer`` (lower case, trimmed, punctuation, number words and
articles handled as in the official evaluation script; its contraction table is not applied, and an answer
that would normalize to the empty string keeps its plain lower-case form).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from vlpeft.errors import DataError
from vlpeft.io import read_json, write_json

_PUNCT = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_NUMBERS = {w: str(i) for i, w in enumerate(_NUMBER_WORDS)}
_NUMBERS["none"] = "0"
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Official VQA answer normalization (punctuation, number words -> digits, articles dropped)."""
    orig = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = orig
    for p in _PUNCT:  # the official script tests the original text, and replaces in the working copy
        if (p + " " in orig or " " + p in orig) or _COMMA_STRIP.search(orig):
            text = text.replace(p, "")
        else:
            text = text.replace(p, " ")
    text = _PERIOD_STRIP.sub("", text)
    words = [_NUMBERS.get(w, w) for w in text.split()]
    # An answer that is nothing but an article ("a") would become "": keep its plain form instead.
    return " ".join(w for w in words if w not in _ARTICLES) or " ".join(orig.split())


def soft_score(matches: int, n: int = 10) -> float:
    """Official accuracy of an answer given by ``matches`` of ``n`` annotators (leave-one-out average)."""
    if n <= 1:
        return float(min(1.0, matches / 3))
    return (matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)) / n


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
        """Official soft score of each distinct (normalized) answer in ``answers`` (in vocab or not)."""
        norm = [normalize_answer(a) for a in answers]
        counts = Counter(norm)
        return {a: soft_score(m, len(norm)) for a, m in counts.items()}

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
