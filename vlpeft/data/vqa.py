"""VQAv2 records of one split: ``vqa/<split>_questions.json`` joined with ``<split>_annotations.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlpeft.data.formats import annotations_path, karpathy_path, questions_path
from vlpeft.data.images import require, require_list, split_images
from vlpeft.errors import DataError
from vlpeft.io import read_json

_QUESTION_FIELDS = ("image_id", "question", "question_id")
_ANNOTATION_FIELDS = (
    "question_id",
    "image_id",
    "question_type",
    "answer_type",
    "multiple_choice_answer",
    "answers",
)


@dataclass(frozen=True)
class VqaRecord:
    """One question about one image, with its annotators' answers (10 for VQAv2)."""

    question_id: int
    image_id: int
    question: str
    answers: list[str]
    answer_type: str
    question_type: str
    multiple_choice_answer: str
    path: Path


def _where(path: Path, kind: str, i: int, record: Any) -> str:
    qid = record.get("question_id") if isinstance(record, dict) else None
    return f"{path}: {kind} {i}" + (f" (question_id {qid})" if qid is not None else "")


def _answers(ann: dict[str, Any], where: str) -> list[str]:
    answers = ann["answers"]
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{where}: field 'answers' must be a non-empty list")
    out = []
    for j, a in enumerate(answers):
        text = require(a, "answer", f"{where}: answer {j}")
        if not isinstance(text, str):
            raise DataError(f"{where}: answer {j}: 'answer' must be a string, got {text!r}")
        out.append(text)
    return out


def load_vqa(root: str | Path, split: str) -> list[VqaRecord]:
    """All questions of ``split`` (questions-file order) with answers and image paths.

    Raises DataError naming the file and record for: a missing file, a missing field, a question without
    annotation (or the reverse), an annotation whose image differs from its question's, an image id that is
    not in the split's Karpathy images, or an empty split.
    """
    root = Path(root)
    images = split_images(root, split)
    qpath, apath = questions_path(root, split), annotations_path(root, split)
    questions = require_list(read_json(qpath, "VQA questions file"), "questions", qpath)
    annotations = require_list(read_json(apath, "VQA annotations file"), "annotations", apath)
    if not questions:
        raise DataError(f"{qpath}: split {split!r} has no questions")

    by_qid: dict[Any, tuple[int, dict[str, Any]]] = {}
    for i, ann in enumerate(annotations):
        where = _where(apath, "annotation", i, ann)
        for key in _ANNOTATION_FIELDS:
            require(ann, key, where)
        if ann["question_id"] in by_qid:
            raise DataError(f"{where}: duplicate question_id")
        by_qid[ann["question_id"]] = (i, ann)

    records, seen = [], set()
    for i, q in enumerate(questions):
        where = _where(qpath, "question", i, q)
        for key in _QUESTION_FIELDS:
            require(q, key, where)
        qid, image_id = q["question_id"], q["image_id"]
        if qid in seen:
            raise DataError(f"{where}: duplicate question_id")
        seen.add(qid)
        if qid not in by_qid:
            raise DataError(f"{where}: no annotation with this question_id in {apath}")
        j, ann = by_qid[qid]
        awhere = _where(apath, "annotation", j, ann)
        if ann["image_id"] != image_id:
            raise DataError(f"{awhere}: image_id {ann['image_id']} differs from the question's {image_id}")
        if image_id not in images:
            raise DataError(
                f"{where}: unknown image_id {image_id} (not in split {split!r} of {karpathy_path(root)})"
            )
        records.append(
            VqaRecord(
                question_id=qid,
                image_id=image_id,
                question=str(q["question"]),
                answers=_answers(ann, awhere),
                answer_type=str(ann["answer_type"]),
                question_type=str(ann["question_type"]),
                multiple_choice_answer=str(ann["multiple_choice_answer"]),
                path=images[image_id],
            )
        )
    if len(by_qid) != len(records):
        j, ann = by_qid[next(iter(set(by_qid) - seen))]
        raise DataError(f"{_where(apath, 'annotation', j, ann)}: no matching question in {qpath}")
    return records
