"""Captions, questions and annotator answers for shapes-world scenes.

Text is lower case with punctuation split off (``"is there a red circle ?"``) so that a whitespace word-level
tokenizer covers it. Every question is answerable from the scene alone and its answer depends on the image:
the same question text gets different answers in different scenes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlpeft.data.scenes import COLORS, QUADRANT_CELL, SHAPES, SIZES

NUMBER_WORDS = ("zero", "one", "two", "three", "four")
# The encoder text prefix of each task in the multi-task setting (VL-Adapter's ``--use_tasks_prompts``:
# "vqa: ", "gpa: " (sic, we write gqa), "nlvr: ", "caption: "). One owner: the models prepend them
# (``vlpeft.models.generative``), the multi-task world's corpus starts each line with its task's prefix so
# that the embedded word tokenizer knows the prefix words (``vlpeft.data.synth.corpus_lines``).
TASK_PREFIXES: dict[str, str] = {"vqa": "vqa: ", "gqa": "gqa: ", "nlvr": "nlvr: ", "caption": "caption: "}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
# Relation word -> (dx, dy) from the reference object to the object the relation names.
RELATIONS: dict[str, tuple[int, int]] = {
    "left of": (-1, 0),
    "right of": (1, 0),
    "above": (0, -1),
    "below": (0, 1),
}

# Question kinds: (answer type, weight). About 50 % other, 30 % yes/no, 20 % number, as calibrated.
KINDS: dict[str, tuple[str, float]] = {
    "exist": ("yes/no", 0.20),
    "count": ("number", 0.20),
    "color": ("other", 0.15),
    "shape": ("other", 0.15),
    "size": ("other", 0.10),
    "size_yn": ("yes/no", 0.10),
    "relation": ("other", 0.10),
}
_KIND_NAMES = list(KINDS)
_KIND_CDF = np.cumsum([w for _, w in KINDS.values()])[:-1] / sum(w for _, w in KINDS.values())
# Per-kind answer pools for annotator noise: a wrong colour answer is another colour, never a shape.
ANSWER_POOLS: dict[str, tuple[str, ...]] = {
    "exist": ("yes", "no"),
    "count": ("0", "1", "2", "3", "4"),
    "color": COLORS,
    "shape": SHAPES,
    "size": SIZES,
    "size_yn": ("yes", "no"),
    "relation": SHAPES,
}


@dataclass(frozen=True)
class Question:
    """One question about a scene with its correct answer."""

    kind: str
    text: str
    answer: str
    question_type: str

    @property
    def answer_type(self) -> str:
        """VQAv2 answer type: "yes/no", "number" or "other"."""
        return KINDS[self.kind][0]


def _name(o: Mapping[str, Any], size: bool = False) -> str:
    return f"{o['size']} {o['color']} {o['shape']}" if size else f"{o['color']} {o['shape']}"


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _listing(objs: Sequence[Mapping[str, Any]], size: bool) -> str:
    items = [f"{_article(_name(o, size))} {_name(o, size)}" for o in objs]
    return items[0] if len(items) == 1 else " , ".join(items[:-1]) + " and " + items[-1]


def _neighbour(
    objs: Sequence[Mapping[str, Any]], ref: Mapping[str, Any], rel: str
) -> Mapping[str, Any] | None:
    """The object in the quadrant next to ``ref`` in direction ``rel`` (same row or column), if any."""
    col, row = QUADRANT_CELL[ref["quadrant"]]
    dx, dy = RELATIONS[rel]
    for o in objs:
        if QUADRANT_CELL[o["quadrant"]] == (col + dx, row + dy):
            return o
    return None


def _relation_pairs(
    objs: Sequence[Mapping[str, Any]],
) -> list[tuple[Mapping[str, Any], str, Mapping[str, Any]]]:
    pairs = []
    for ref in objs:
        for rel in RELATIONS:
            other = _neighbour(objs, ref, rel)
            if other is not None:
                pairs.append((other, rel, ref))  # "<other> is <rel> <ref>"
    return pairs


def captions(scene: Mapping[str, Any], rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` captions from five templates (cycled when n > 5), each with some wording variation."""
    objs = [scene["objects"][i] for i in rng.permutation(len(scene["objects"]))]
    k = len(objs)
    first = objs[0]
    out = []
    for t in range(n):
        template = t % 5
        if template == 0:  # full listing with sizes
            lead = ["", "a picture of ", "an image with "][int(rng.integers(3))]
            text = f"{lead}{_listing(objs, size=True)}"
        elif template == 1:  # count followed by a listing
            noun = "shape" if k == 1 else "shapes"
            text = f"{NUMBER_WORDS[k]} {noun} : {_listing(objs, size=False)}"
        elif template == 2:  # one spatial relation, or an absolute position when there is none
            pairs = _relation_pairs(objs)
            if pairs:
                other, rel, ref = pairs[int(rng.integers(len(pairs)))]
                text = f"{_article(_name(other))} {_name(other)} is {rel} {_article(_name(ref))} {_name(ref)}"
            else:
                text = f"{_article(_name(first))} {_name(first)} is in the {first['quadrant']}"
        elif template == 3:  # "there is a ... and N other shapes"
            rest = k - 1
            if rest == 0:
                text = f"there is only {_article(_name(first, True))} {_name(first, True)}"
            else:
                noun = "shape" if rest == 1 else "shapes"
                named = f"{_article(_name(first, True))} {_name(first, True)}"
                text = f"there is {named} and {NUMBER_WORDS[rest]} other {noun}"
        else:  # absolute position
            o = objs[int(rng.integers(k))]
            text = f"{_article(_name(o, True))} {_name(o, True)} in the {o['quadrant']} of the image"
        out.append(text)
    return out


def _ask(kind: str, objs: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> Question | None:
    """One question of ``kind`` about the scene, or None when the scene does not allow that kind."""
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    if kind == "exist":
        present = {(o["color"], o["shape"]) for o in objs}
        if rng.random() < 0.5:  # balanced yes/no: half the time ask about an object that is there
            color, shape = pick(sorted(present))
        else:
            color, shape = pick(sorted({(c, s) for c in COLORS for s in SHAPES} - present))
        answer = "yes" if (color, shape) in present else "no"
        return Question(kind, f"is there {_article(color)} {color} {shape} ?", answer, "is there a")
    if kind == "count":
        which = int(rng.integers(3))
        if which == 0:
            return Question(kind, "how many shapes are there ?", str(len(objs)), "how many")
        if which == 1:
            shape = pick(SHAPES)
            n = sum(o["shape"] == shape for o in objs)
            return Question(kind, f"how many {PLURAL[shape]} are there ?", str(n), "how many")
        color = pick(COLORS)
        n = sum(o["color"] == color for o in objs)
        return Question(kind, f"how many {color} shapes are there ?", str(n), "how many")
    if kind == "color":
        counts = Counter(o["shape"] for o in objs)
        unique = [o for o in objs if counts[o["shape"]] == 1]
        if not unique:
            return None
        o = pick(unique)
        return Question(kind, f"what color is the {o['shape']} ?", o["color"], "what color is the")
    if kind == "shape":
        counts = Counter(o["color"] for o in objs)
        unique = [o for o in objs if counts[o["color"]] == 1]
        if not unique:
            return None
        o = pick(unique)
        return Question(kind, f"what shape is the {o['color']} object ?", o["shape"], "what shape is the")
    if kind == "size":
        o = pick(objs)
        return Question(kind, f"what size is the {_name(o)} ?", o["size"], "what size is the")
    if kind == "size_yn":
        o = pick(objs)
        size = pick(SIZES)
        answer = "yes" if o["size"] == size else "no"
        return Question(kind, f"is the {_name(o)} {size} ?", answer, "is the")
    if kind == "relation":
        pairs = _relation_pairs(objs)
        if not pairs:
            return None
        other, rel, ref = pick(pairs)
        return Question(kind, f"what shape is {rel} the {_name(ref)} ?", other["shape"], "what shape is")
    raise ValueError(f"unknown question kind {kind!r}")


def questions(scene: Mapping[str, Any], rng: np.random.Generator, n: int = 4) -> list[Question]:
    """``n`` questions with distinct texts (fewer only if the scene cannot give that many)."""
    out: list[Question] = []
    seen: set[str] = set()
    for _ in range(20 * n):
        if len(out) == n:
            break
        kind = _KIND_NAMES[int(np.searchsorted(_KIND_CDF, rng.random(), side="right"))]
        q = _ask(kind, scene["objects"], rng)
        if q is not None and q.text not in seen:
            seen.add(q.text)
            out.append(q)
    return out


def annotator_answers(q: Question, rng: np.random.Generator, accuracy: float, n: int = 10) -> list[str]:
    """``n`` answers: each right with prob ``accuracy``, else a wrong answer from the kind's pool."""
    wrong = [a for a in ANSWER_POOLS[q.kind] if a != q.answer]
    right = rng.random(n) < accuracy
    return [q.answer if r else wrong[int(rng.integers(len(wrong)))] for r in right]


def majority_answer(answers: Sequence[str], preferred: str | None = None) -> str:
    """Most frequent answer (``multiple_choice_answer``); ties go to ``preferred``, then the first seen."""
    counts = Counter(answers)
    top = max(counts.values())
    if preferred is not None and counts.get(preferred) == top:
        return preferred
    return next(a for a in answers if counts[a] == top)
