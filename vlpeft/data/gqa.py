"""GQA in the format VL-Adapter reads (LXMERT/VL-T5 JSON lists), and the converter from the official files.

Layout under a data root (written by ``vlpeft data synth`` with ``world.extra_tasks: [gqa]``, or by
``convert_official_gqa`` / ``vlpeft data prepare --source gqa``)::

    gqa/train.json  gqa/valid.json  gqa/testdev.json
        [{"img_id": "2375429", "label": {"pipe": 1.0}, "question_id": "07333408", "sent": "What is ...?"}]

The official files (``{split}_balanced_questions.json``) are one dict keyed by question id, each entry with
``imageId``, ``question``, ``answer`` (and ``fullAnswer``, ``semantic``, ``types``, ... that are not
needed); the conversion keeps exactly those three fields, ``label = {answer: 1.0}``, as LXMERT's
``process_data.py`` does (train <- train_balanced, valid <- val_balanced, testdev <- testdev_balanced).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError
from vlpeft.io import read_json

SPLITS: tuple[str, ...] = ("train", "valid", "testdev")
OFFICIAL_FILES: dict[str, str] = {
    "train": "train_balanced_questions.json",
    "valid": "val_balanced_questions.json",
    "testdev": "testdev_balanced_questions.json",
}


@dataclass(frozen=True)
class GqaRecord:
    """One GQA question: its image key (as in the file), text and single answer."""

    question_id: str
    img_id: str
    question: str
    answer: str


def gqa_path(root: str | Path, split: str) -> Path:
    """``<root>/gqa/<split>.json``."""
    if split not in SPLITS:
        raise DataError(f"GQA split {split!r} is not one of {', '.join(SPLITS)}")
    return Path(root) / "gqa" / f"{split}.json"


def parse_gqa(data: Any, source: str) -> list[GqaRecord]:
    """Records of an LXMERT-format GQA list; a malformed record is a DataError naming ``source`` and it."""
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a JSON list of questions, got {type(data).__name__}")
    out: list[GqaRecord] = []
    seen: set[str] = set()
    for i, rec in enumerate(data):
        where = f"{source}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        for key in ("img_id", "label", "question_id", "sent"):
            if key not in rec:
                raise DataError(f"{where}: missing field {key!r}")
        where = f"{source}: record {i} (question_id {rec['question_id']!r})"
        label = rec["label"]
        if not isinstance(label, dict) or len(label) != 1:
            raise DataError(f"{where}: label must be one {{answer: score}} pair (GQA), got {label!r:.80}")
        if not isinstance(rec["sent"], str) or not rec["sent"].strip():
            raise DataError(f"{where}: sent must be a non-empty string")
        qid = str(rec["question_id"])
        if qid in seen:
            raise DataError(f"{where}: question_id appears twice")
        seen.add(qid)
        (answer,) = label
        out.append(GqaRecord(qid, str(rec["img_id"]), rec["sent"], str(answer)))
    if not out:
        raise DataError(f"{source}: no questions")
    return out


def load_gqa(root: str | Path, split: str) -> list[GqaRecord]:
    """The GQA questions of ``split`` (train | valid | testdev) under ``root``."""
    path = gqa_path(root, split)
    return parse_gqa(read_json(path, "GQA questions file"), str(path))


def convert_official_gqa(data: Any, source: str) -> list[dict[str, Any]]:
    """Official balanced questions (dict keyed by question id) -> the LXMERT list, in the file's order."""
    if not isinstance(data, dict):
        raise DataError(
            f"{source}: expected the official dict keyed by question id, got {type(data).__name__}"
        )
    out = []
    for qid, q in data.items():
        where = f"{source}: question {qid!r}"
        if not isinstance(q, dict):
            raise DataError(f"{where}: expected an object, got {type(q).__name__}")
        for key in ("imageId", "question", "answer"):
            if key not in q:
                raise DataError(f"{where}: missing field {key!r}")
        out.append({"img_id": str(q["imageId"]), "label": {q["answer"]: 1.0}, "question_id": qid,
                    "sent": q["question"]})  # fmt: skip
    return out


def to_lxmert(records: list[GqaRecord]) -> list[dict[str, Any]]:
    """Records back to the LXMERT list format (what the embedded world writes)."""
    return [
        {"img_id": r.img_id, "label": {r.answer: 1.0}, "question_id": r.question_id, "sent": r.question}
        for r in records
    ]


def prepare_gqa(raw: str | Path, out: str | Path) -> dict[str, int]:
    """Convert the official balanced question files found under ``raw`` into ``<out>/gqa/<split>.json``.

    Every split is converted (and validated by ``parse_gqa``) before any file is written; each file is
    written atomically. Returns the number of questions per split.
    """
    from vlpeft.io import write_json

    converted = {}
    for split, name in OFFICIAL_FILES.items():
        found = sorted(Path(raw).rglob(name))
        if not found:
            raise DataError(f"{raw}: {name} not found (run `vlpeft data download --what gqa`)")
        rows = convert_official_gqa(read_json(found[0], "GQA questions file"), str(found[0]))
        parse_gqa(rows, str(found[0]))
        converted[split] = rows
    for split, rows in converted.items():
        write_json(gqa_path(out, split), rows, indent=None)
    return {s: len(r) for s, r in converted.items()}
