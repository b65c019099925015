"""Builders for the on-disk formats of the data layout (Karpathy, COCO caption GT, VQAv2 files).

Shared by the synthetic world (``synth.py``) and the real-data preparation (``prepare.py``), so both write
byte-for-byte the same structure and the loaders read one format.

Layout under a root dir (splits ``train``, ``val``, ``test``)::

    images/<split>/<file_name>       dataset_coco.json       captions_<split>.json
    vqa/<split>_questions.json       vqa/<split>_annotations.json       world.json
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class ImageEntry:
    """One image with its captions, in a given split."""

    image_id: int
    split: str
    file_name: str
    captions: list[str]


@dataclass
class VqaEntry:
    """One question with its ten answers (VQAv2 fields)."""

    question_id: int
    image_id: int
    question: str
    question_type: str
    answer_type: str
    multiple_choice_answer: str
    answers: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def karpathy(images: Sequence[ImageEntry]) -> dict[str, Any]:
    """The Karpathy ``dataset_coco.json`` dict; ``filepath`` is the folder under ``images/`` (= the split)."""
    out, sentid = [], 0
    for imgid, im in enumerate(images):
        sentences, sentids = [], []
        for raw in im.captions:
            tokens = raw.lower().replace(".", " ").replace(",", " ").split()
            sentences.append({"raw": raw, "tokens": tokens, "imgid": imgid, "sentid": sentid})
            sentids.append(sentid)
            sentid += 1
        out.append(
            {
                "filepath": im.split,
                "filename": im.file_name,
                "imgid": imgid,
                "cocoid": im.image_id,
                "split": im.split,
                "sentids": sentids,
                "sentences": sentences,
            }
        )
    return {"dataset": "coco", "images": out}


def coco_captions(images: Iterable[ImageEntry], description: str) -> dict[str, Any]:
    """COCO caption ground truth for one split (what pycocotools ``COCO`` and pycocoevalcap read)."""
    imgs, anns, ann_id = [], [], 1
    for im in images:
        imgs.append({"id": im.image_id, "file_name": im.file_name})
        for cap in im.captions:
            anns.append({"image_id": im.image_id, "id": ann_id, "caption": cap})
            ann_id += 1
    return {
        "info": {"description": description},
        "licenses": [],
        "type": "captions",
        "images": imgs,
        "annotations": anns,
    }


def vqa_questions(entries: Iterable[VqaEntry], subtype: str, description: str) -> dict[str, Any]:
    """VQAv2 questions file for one split."""
    return {
        "info": {"description": description},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": subtype,
        "license": {},
        "questions": [
            {"image_id": e.image_id, "question": e.question, "question_id": e.question_id} for e in entries
        ],
    }


def vqa_annotations(entries: Iterable[VqaEntry], subtype: str, description: str) -> dict[str, Any]:
    """VQAv2 annotations file for one split (ten answers per question, ``answer_id`` 1..10)."""
    anns = []
    for e in entries:
        anns.append(
            {
                "question_id": e.question_id,
                "image_id": e.image_id,
                "question_type": e.question_type,
                "answer_type": e.answer_type,
                "multiple_choice_answer": e.multiple_choice_answer,
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                    for i, a in enumerate(e.answers)
                ],
                **e.extra,
            }
        )
    return {
        "info": {"description": description},
        "data_type": "mscoco",
        "data_subtype": subtype,
        "license": {},
        "annotations": anns,
    }


def questions_path(root: Path, split: str) -> Path:
    """``<root>/vqa/<split>_questions.json``."""
    return Path(root) / "vqa" / f"{split}_questions.json"


def annotations_path(root: Path, split: str) -> Path:
    """``<root>/vqa/<split>_annotations.json``."""
    return Path(root) / "vqa" / f"{split}_annotations.json"


def captions_path(root: Path, split: str) -> Path:
    """``<root>/captions_<split>.json``."""
    return Path(root) / f"captions_{split}.json"


def karpathy_path(root: Path) -> Path:
    """``<root>/dataset_coco.json``."""
    return Path(root) / "dataset_coco.json"
