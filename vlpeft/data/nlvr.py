"""NLVR2 in the format VL-Adapter reads (LXMERT/VL-T5 JSON lists), and the converter from the official files.

Layout under a data root (written by ``vlpeft data synth`` with ``world.extra_tasks: [nlvr]``, or by
``convert_official_nlvr``)::

    nlvr/train.json  nlvr/valid.json  nlvr/test.json
        [{"identifier": "train-10171-0-0", "img0": "train-10171-0-img0", "img1": "train-10171-0-img1",
          "label": 0 | 1, "sent": "...", "uid": "nlvr2_train_0"}]
    nlvr/images.json   (the embedded world, and prepared real data) {image name: {"id": int, "file": path}}

The official files (lil-lab/nlvr ``nlvr2/data/{train,dev,test1}.json``) are JSON **lines** with
``identifier = split-set_id-pair_id-sentence_id``, ``sentence``, ``label`` ("True"/"False"), the two image
URLs and annotation metadata. The conversion follows LXMERT's ``process_dataset.py``: the image names are
the identifier without its sentence id plus ``-img0`` / ``-img1``, ``label`` 1 for "True", ``uid`` =
``nlvr2_<split>_<line number>`` (train <- train, valid <- dev, test <- test1, the public test-P).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError
from vlpeft.io import read_json

SPLITS: tuple[str, ...] = ("train", "valid", "test")
OFFICIAL_FILES: dict[str, str] = {"train": "train.json", "valid": "dev.json", "test": "test1.json"}
IMAGES = "images.json"


@dataclass(frozen=True)
class NlvrRecord:
    """One NLVR2 statement about a pair of images."""

    uid: str
    identifier: str
    img0: str
    img1: str
    sentence: str
    label: int

    @property
    def answer(self) -> str:
        """The generation target: ``true`` / ``false``."""
        return "true" if self.label else "false"

    @property
    def image_set(self) -> str:
        """The identifier without its sentence id: statements about one image pair (for consistency)."""
        return self.identifier.rsplit("-", 1)[0]


def nlvr_path(root: str | Path, split: str) -> Path:
    """``<root>/nlvr/<split>.json``."""
    if split not in SPLITS:
        raise DataError(f"NLVR2 split {split!r} is not one of {', '.join(SPLITS)}")
    return Path(root) / "nlvr" / f"{split}.json"


def parse_nlvr(data: Any, source: str) -> list[NlvrRecord]:
    """Records of an LXMERT-format NLVR2 list; a malformed record is a DataError naming ``source`` and it."""
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a JSON list of statements, got {type(data).__name__}")
    out = []
    for i, rec in enumerate(data):
        where = f"{source}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        for key in ("identifier", "img0", "img1", "label", "sent", "uid"):
            if key not in rec:
                raise DataError(f"{where}: missing field {key!r}")
        where = f"{source}: record {i} (uid {rec['uid']!r})"
        if rec["label"] not in (0, 1) or isinstance(rec["label"], bool):
            raise DataError(f"{where}: label must be 0 or 1, got {rec['label']!r}")
        if not isinstance(rec["sent"], str) or not rec["sent"].strip():
            raise DataError(f"{where}: sent must be a non-empty string")
        if str(rec["identifier"]).count("-") < 3:
            raise DataError(f"{where}: identifier {rec['identifier']!r} is not split-set-pair-sentence")
        out.append(
            NlvrRecord(str(rec["uid"]), str(rec["identifier"]), str(rec["img0"]), str(rec["img1"]),
                       rec["sent"], int(rec["label"]))
        )  # fmt: skip
    if not out:
        raise DataError(f"{source}: no statements")
    return out


def load_nlvr(root: str | Path, split: str) -> list[NlvrRecord]:
    """The NLVR2 statements of ``split`` (train | valid | test) under ``root``."""
    path = nlvr_path(root, split)
    return parse_nlvr(read_json(path, "NLVR2 statements file"), str(path))


def convert_official_nlvr(text: str, split: str, source: str) -> list[dict[str, Any]]:
    """Official JSON lines of one split -> the LXMERT list (see the module docstring)."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        where = f"{source}: line {i + 1}"
        try:
            datum = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        for key in ("identifier", "sentence", "label"):
            if not isinstance(datum, dict) or key not in datum:
                raise DataError(f"{where}: missing field {key!r}")
        if datum["label"] not in ("True", "False"):
            raise DataError(f"{where}: label must be 'True' or 'False', got {datum['label']!r}")
        stem = datum["identifier"].rsplit("-", 1)[0]
        out.append({"identifier": datum["identifier"], "img0": f"{stem}-img0", "img1": f"{stem}-img1",
                    "label": 1 if datum["label"] == "True" else 0, "sent": datum["sentence"],
                    "uid": f"nlvr2_{split}_{i}"})  # fmt: skip
    return out


def load_image_names(root: str | Path) -> dict[str, dict[str, Any]]:
    """``nlvr/images.json``: image name -> {"id": feature-store id, "file": path under root}."""
    from vlpeft.data.images import read_image_table

    return read_image_table(Path(root) / "nlvr" / IMAGES)


def prepare_nlvr(raw: str | Path, out: str | Path) -> dict[str, int]:
    """Convert the official JSON-lines files found under ``raw`` into ``<out>/nlvr/<split>.json``.

    Every split is converted and validated before any file is written; each file is written atomically.
    The images (given by the NLVR2 authors on request) and ``nlvr/images.json`` come separately.
    """
    from vlpeft.io import write_json

    converted = {}
    for split, name in OFFICIAL_FILES.items():
        found = sorted(Path(raw).rglob(name))
        if not found:
            raise DataError(f"{raw}: {name} not found (run `vlpeft data download --what nlvr`)")
        rows = convert_official_nlvr(found[0].read_text(), split, str(found[0]))
        parse_nlvr(rows, str(found[0]))
        converted[split] = rows
    for split, rows in converted.items():
        write_json(nlvr_path(out, split), rows, indent=None)
    return {s: len(r) for s, r in converted.items()}
