"""GQA-like and NLVR2-like data of the embedded shapes world, in exactly the formats of the real files.

- **GQA-like**: compositional questions with one answer each (relations, attribute comparison, "both",
  same-colour/shape, position), asked about the world's own images; yes/no questions are balanced by
  construction (the answer is drawn first, then a question with that answer); splits train / valid /
  testdev use the world's train / val / test images.
- **NLVR2-like**: pairs of the world's images (left = ``img0``, right = ``img1``) with true/false statements
  about counts, colours, "both images", "the left image has more … than the right image", …; each pair gets
  statements with both labels, so labels are balanced exactly; splits train / valid / test.

Both reuse the world's rendered images, so the feature store of the world covers them; ``nlvr/images.json``
maps each NLVR2 image name to its world image id and file. Everything is a pure function of (scenes, seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlpeft.data.language import NUMBER_WORDS, PLURAL, RELATIONS, _neighbour
from vlpeft.data.scenes import COLORS, SHAPES

_GQA_STREAM, _NLVR_STREAM = 11, 12  # seed-stream ids (the world uses 0-2 and 7)
WORLD_SPLIT = {"gqa": {"train": "train", "valid": "val", "testdev": "test"},
               "nlvr": {"train": "train", "valid": "val", "test": "test"}}  # fmt: skip

Obj = Mapping[str, Any]


def _name(o: Obj) -> str:
    return f"{o['color']} {o['shape']}"


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


# ------------------------------------------------------------------------------------------- GQA-like


def _gqa_open(objs: Sequence[Obj], rng: np.random.Generator) -> tuple[str, str] | None:
    """An open question with a single answer (attribute of a related object, or a position)."""
    kind = int(rng.integers(3))
    if kind == 0:  # "what color is the shape <rel> the <ref> ?"
        pairs = [(o, rel, ref) for ref in objs for rel in RELATIONS if (o := _neighbour(objs, ref, rel))]
        if not pairs:
            return None
        other, rel, ref = _pick(rng, pairs)
        attr = _pick(rng, ("color", "size"))
        return f"what {attr} is the shape {rel} the {_name(ref)} ?", str(other[attr])
    if kind == 1:  # "where is the <name> ?"
        o = _pick(rng, objs)
        return f"where is the {_name(o)} ?", str(o["quadrant"])
    o = _pick(rng, objs)  # "what is the <size> <color> thing ?" -> its shape
    return f"which shape is the {o['size']} {o['color']} object ?", str(o["shape"])


def _gqa_yes_no(objs: Sequence[Obj], rng: np.random.Generator, want: bool) -> str | None:
    """A yes/no question whose answer is ``want`` (None if the scene cannot give one)."""
    present = sorted({(o["color"], o["shape"]) for o in objs})
    absent = sorted({(c, s) for c in COLORS for s in SHAPES} - set(present))
    kind = int(rng.integers(3))
    if kind == 0:  # both
        if want:
            if len(present) < 2:
                return None
            a, b = (present[i] for i in rng.permutation(len(present))[:2])
        else:
            a, b = _pick(rng, present), _pick(rng, absent)
            if rng.random() < 0.5:
                a, b = b, a
        return f"are there both a {a[0]} {a[1]} and a {b[0]} {b[1]} ?"
    if kind == 1:  # same size
        if len(objs) < 2:
            return None
        pairs = [
            (a, b) for i, a in enumerate(objs) for b in objs[i + 1 :] if (a["size"] == b["size"]) == want
        ]
        if not pairs:
            return None
        a, b = _pick(rng, pairs)
        return f"do the {_name(a)} and the {_name(b)} have the same size ?"
    # relation check: "is the <a> <rel> the <b> ?"
    triples = [(a, rel, b) for a in objs for b in objs if a is not b for rel in RELATIONS
               if (_neighbour(objs, b, rel) is a) == want]  # fmt: skip
    if not triples:
        return None
    a, rel, b = _pick(rng, triples)
    return f"is the {_name(a)} {rel} the {_name(b)} ?"


def gqa_questions(objs: Sequence[Obj], rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``n`` distinct (question, answer) pairs: half yes/no (answer drawn first: balanced), half open."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(30 * n):
        if len(out) == n:
            break
        if rng.random() < 0.5:
            want = bool(rng.random() < 0.5)
            text = _gqa_yes_no(objs, rng, want)
            qa = None if text is None else (text, "yes" if want else "no")
        else:
            qa = _gqa_open(objs, rng)
        if qa is not None and qa[0] not in seen:
            seen.add(qa[0])
            out.append(qa)
    return out


def make_gqa(
    scenes: Sequence[Mapping[str, Any]], seed: int, per_image: int
) -> dict[str, list[dict[str, Any]]]:
    """The GQA-like splits in the LXMERT list format (``{img_id, label, question_id, sent}``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    qid = 0
    for split_idx, (split, world_split) in enumerate(WORLD_SPLIT["gqa"].items()):
        rows = []
        for scene in (s for s in scenes if s["split"] == world_split):
            rng = np.random.default_rng([seed, _GQA_STREAM, split_idx, scene["image_id"]])
            for text, answer in gqa_questions(scene["objects"], rng, per_image):
                qid += 1
                rows.append({"img_id": str(scene["image_id"]), "label": {answer: 1.0},
                             "question_id": f"{qid:08d}", "sent": text})  # fmt: skip
        out[split] = rows
    return out


# ----------------------------------------------------------------------------------------- NLVR2-like

Statement = tuple[str, Callable[[Sequence[Obj], Sequence[Obj]], bool]]


def _count(objs: Sequence[Obj], key: str | None = None, value: str | None = None) -> int:
    return sum(1 for o in objs if key is None or o[key] == value)


def _statements(rng: np.random.Generator) -> Statement:
    """One random statement template, as (text, truth function of (left objects, right objects))."""
    kind = int(rng.integers(6))
    side = _pick(rng, ("left", "right"))
    pick_side = (lambda left, right: left) if side == "left" else (lambda left, right: right)
    if kind == 0:  # exact count on one side
        k = int(rng.integers(1, 5))
        noun = "shape" if k == 1 else "shapes"
        return (f"the {side} image contains exactly {NUMBER_WORDS[k]} {noun}",
                lambda a, b: len(pick_side(a, b)) == k)  # fmt: skip
    if kind == 1:  # colour present on one side
        c, s = _pick(rng, COLORS), _pick(rng, SHAPES)
        return (f"the {side} image has a {c} {s}",
                lambda a, b: any(o["color"] == c and o["shape"] == s for o in pick_side(a, b)))  # fmt: skip
    if kind == 2:  # both images
        c = _pick(rng, COLORS)
        return (f"both images contain a {c} shape",
                lambda a, b: _count(a, "color", c) > 0 and _count(b, "color", c) > 0)  # fmt: skip
    if kind == 3:  # comparison of a shape count
        s = _pick(rng, SHAPES)
        return (f"the left image has more {PLURAL[s]} than the right image",
                lambda a, b: _count(a, "shape", s) > _count(b, "shape", s))  # fmt: skip
    if kind == 4:  # comparison of all shapes
        return ("the left image has more shapes than the right image", lambda a, b: len(a) > len(b))
    k = int(rng.integers(1, 4))  # total count of a colour over both images
    c = _pick(rng, COLORS)
    noun = "shape" if k == 1 else "shapes"
    return (f"there are exactly {NUMBER_WORDS[k]} {c} {noun} in total",
            lambda a, b: _count(a, "color", c) + _count(b, "color", c) == k)  # fmt: skip


def nlvr_statements(
    left: Sequence[Obj], right: Sequence[Obj], rng: np.random.Generator, n: int
) -> list[tuple[str, int]]:
    """``n`` distinct statements about a pair, labels alternating 1, 0, 1, ... (balanced), if findable."""
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for _ in range(60 * n):
        if len(out) == n:
            break
        want = 1 - len(out) % 2
        text, truth = _statements(rng)
        if text not in seen and int(truth(left, right)) == want:
            seen.add(text)
            out.append((text, want))
    return out


def nlvr_contrast(
    pair_a: tuple[Sequence[Obj], Sequence[Obj]],
    pair_b: tuple[Sequence[Obj], Sequence[Obj]],
    rng: np.random.Generator,
    n: int,
) -> list[tuple[str, int, int]]:
    """Up to ``n`` distinct statements true for one image pair and false for the other, as NLVR2's sentences
    are written for a set of pairs: ``(text, label on pair a, label on pair b)``."""
    out: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for _ in range(60 * n):
        if len(out) == n:
            break
        text, truth = _statements(rng)
        a, b = int(truth(*pair_a)), int(truth(*pair_b))
        if text not in seen and a != b:
            seen.add(text)
            out.append((text, a, b))
    return out


def make_nlvr(
    scenes: Sequence[Mapping[str, Any]], files: Mapping[int, str], seed: int, per_set: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """The NLVR2-like splits in the LXMERT format, and the image table (name -> world id and file).

    Four images make a set of two pairs; each sentence of a set is true for one pair and false for the other
    (labels exactly balanced), so NLVR2's consistency (every pair of a sentence right) is meaningful.
    Identifiers follow NLVR2: ``split-set-pair-sentence``.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    images: dict[str, dict[str, Any]] = {}
    for split_idx, (split, world_split) in enumerate(WORLD_SPLIT["nlvr"].items()):
        in_split = [s for s in scenes if s["split"] == world_split]
        rng = np.random.default_rng([seed, _NLVR_STREAM, split_idx])
        order = [in_split[i] for i in rng.permutation(len(in_split))]
        rows: list[dict[str, Any]] = []
        for set_id in range(len(order) // 4):
            quad = order[4 * set_id : 4 * set_id + 4]
            pairs = [(quad[0], quad[1]), (quad[2], quad[3])]
            for p, (left, right) in enumerate(pairs):
                for side, scene in (("img0", left), ("img1", right)):
                    images[f"{split}-{set_id}-{p}-{side}"] = {"id": scene["image_id"], "file": files[scene["image_id"]]}
            objs = [(left["objects"], right["objects"]) for left, right in pairs]
            for k, (text, *labels) in enumerate(nlvr_contrast(objs[0], objs[1], rng, per_set)):
                for p, label in enumerate(labels):
                    stem = f"{split}-{set_id}-{p}"
                    rows.append({"identifier": f"{stem}-{k}", "img0": f"{stem}-img0", "img1": f"{stem}-img1",
                                 "label": label, "sent": text, "uid": f"nlvr2_{split}_{len(rows)}"})  # fmt: skip
        out[split] = rows
    return out, images
