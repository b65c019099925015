"""Caption records of one Karpathy split (synthetic and real COCO alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlpeft.data.formats import karpathy_path
from vlpeft.data.images import image_path, karpathy_images, require, split_images
from vlpeft.errors import DataError


@dataclass(frozen=True)
class CaptionRecord:
    """One image with all its reference captions."""

    image_id: int
    path: Path
    captions: list[str]


def load_captions(root: str | Path, split: str) -> list[CaptionRecord]:
    """Images of ``split`` with their captions, from ``<root>/dataset_coco.json`` (file order).

    Raises DataError for a missing file, an unknown or empty split, a missing image file, or a sentence
    without ``raw`` text.
    """
    paths = split_images(root, split)  # validates the split and that every image file exists
    kpath = karpathy_path(Path(root))
    records = []
    for i, entry in enumerate(karpathy_images(root)):
        if entry["split"] != split:
            continue
        caps = []
        for j, sent in enumerate(entry["sentences"]):
            raw = require(sent, "raw", f"{kpath}: image {i} (cocoid {entry['cocoid']}): sentence {j}")
            if not isinstance(raw, str) or not raw.strip():
                raise DataError(
                    f"{kpath}: image {i} (cocoid {entry['cocoid']}): sentence {j} has empty 'raw' text"
                )
            caps.append(raw.strip())
        if not caps:
            raise DataError(f"{kpath}: image {i} (cocoid {entry['cocoid']}): no sentences")
        records.append(
            CaptionRecord(entry["cocoid"], paths.get(entry["cocoid"], image_path(root, entry)), caps)
        )
    return records
