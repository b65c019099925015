"""``vlpeft data prepare --source coco``: real COCO 2014 + Karpathy split + VQAv2 -> the data layout.

Input (searched under ``raw``, e.g. what ``vlpeft data download`` unpacked): the image folders ``train2014/``
and ``val2014/``, Karpathy's ``dataset_coco.json`` and the four VQAv2 files
``v2_OpenEnded_mscoco_{train,val}2014_questions.json`` / ``v2_mscoco_{train,val}2014_annotations.json``.

Output: the same layout as ``vlpeft data synth`` (see ``formats.py``). Karpathy ``restval`` images join
``train``. Each VQA question goes to the Karpathy split of its image (the VL-T5 / Routing-VLPEFT protocol),
so VQA and captioning never test on training images. Images are linked (symlink by default) into
``images/<split>/`` rather than copied. The output is built in a temp dir and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlpeft.data import formats
from vlpeft.data.formats import SPLITS, ImageEntry
from vlpeft.data.images import require, require_list
from vlpeft.data.paths import destination, inside
from vlpeft.errors import DataError
from vlpeft.io import atomic_dir, read_json

IMAGE_DIRS = ("train2014", "val2014")
QUESTION_FILES = (
    "v2_OpenEnded_mscoco_train2014_questions.json",
    "v2_OpenEnded_mscoco_val2014_questions.json",
)
ANNOTATION_FILES = ("v2_mscoco_train2014_annotations.json", "v2_mscoco_val2014_annotations.json")
KARPATHY_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}
_MAX_DEPTH = 4


def find_raw_files(raw: str | Path) -> dict[str, Path]:
    """Locate the inputs under ``raw`` (depth <= 4, image folders are not descended into)."""
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw data directory not found (run `vlpeft data download` first)")
    wanted = {"dataset_coco.json", *QUESTION_FILES, *ANNOTATION_FILES}
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(raw):
        here = Path(dirpath)
        depth = len(here.relative_to(raw).parts)
        for d in list(dirnames):
            # "train2014/train2014/" (an archive unpacked into a folder of its own name): use the inner one.
            nested = d in IMAGE_DIRS and (here / d / d).is_dir()
            if d in IMAGE_DIRS and not nested and d not in found:
                found[d] = here / d
            if (d in IMAGE_DIRS and not nested) or d.startswith(".") or depth >= _MAX_DEPTH:
                dirnames.remove(d)
        for f in filenames:
            if f in wanted and f not in found:
                found[f] = here / f
    missing = sorted(({*IMAGE_DIRS} | wanted) - set(found))
    if missing:
        raise DataError(f"{raw}: not found: {', '.join(missing)} (searched {_MAX_DEPTH} levels deep)")
    return found


LINKS = ("symlink", "hardlink", "copy")


def link_image(src: Path, dst: Path, how: str) -> None:
    """Put ``src`` at ``dst`` by ``--link`` (symlink to the absolute source, hard link or copy)."""
    if how == "symlink":
        dst.symlink_to(src.resolve())
    elif how == "hardlink":
        os.link(src, dst)
    elif how == "copy":
        shutil.copy2(src, dst)
    else:
        raise DataError(f"--link {how!r}: choose symlink, hardlink or copy")


def _karpathy_images(path: Path) -> list[dict[str, Any]]:
    images = require_list(read_json(path, "Karpathy split file"), "images", path)
    for i, im in enumerate(images):
        where = f"{path}: image {i}"
        for key in ("filepath", "filename", "cocoid", "split", "sentences"):
            require(im, key, where)
        if im["split"] not in KARPATHY_SPLIT:
            raise DataError(f"{where} (cocoid {im['cocoid']}): unknown split {im['split']!r}")
    return images


def _vqa_by_split(
    files: list[Path], key: str, split_of: dict[int, str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any], int]:
    """Records of ``key`` ("questions"/"annotations") from the official files, grouped by Karpathy split."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    header: dict[str, Any] = {}
    dropped = 0
    for path in files:
        data = read_json(path, f"VQAv2 {key} file")
        records = require_list(data, key, path)
        header = header or {k: v for k, v in data.items() if k != key}
        for i, rec in enumerate(records):
            image_id = require(rec, "image_id", f"{path}: {key[:-1]} {i}")
            require(rec, "question_id", f"{path}: {key[:-1]} {i}")
            split = split_of.get(image_id)
            if split is None:
                dropped += 1  # image outside the Karpathy split (does not happen for the official files)
                continue
            out[split].append(rec)
    return out, header, dropped


def prepare_coco(
    raw: str | Path, out: str | Path, link: str = "symlink", progress: bool = True
) -> dict[str, Any]:
    """Write the data layout for real COCO/VQAv2 under ``out``; return the provenance (``world.json``)."""
    if link not in LINKS:
        raise DataError(f"--link {link!r}: choose symlink, hardlink or copy")
    files = find_raw_files(raw)
    kimages = _karpathy_images(files["dataset_coco.json"])
    split_of = {im["cocoid"]: KARPATHY_SPLIT[im["split"]] for im in kimages}
    out = Path(out)
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
        karpathy_out, entries = [], []
        for im in tqdm(kimages, desc="link images", unit="img", disable=not progress or None):
            split = split_of[im["cocoid"]]
            where = f"{files['dataset_coco.json']}: image cocoid {im['cocoid']}"
            folder = files.get(im["filepath"]) or inside(Path(raw), im["filepath"], where)
            src = inside(folder, im["filename"], where)
            if not src.is_file():
                raise DataError(f"{where}: {src} not found")
            link_image(src, destination(tmp / "images" / split, im["filename"], where), link)
            caps = [
                require(s, "raw", f"{files['dataset_coco.json']}: cocoid {im['cocoid']}")
                for s in im["sentences"]
            ]
            entries.append(ImageEntry(im["cocoid"], split, im["filename"], [c.strip() for c in caps]))
            karpathy_out.append({**im, "filepath": split, "split": split, "karpathy_split": im["split"]})
        (tmp / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": karpathy_out}))
        for split in SPLITS:
            in_split = [e for e in entries if e.split == split]
            caps = formats.coco_captions(in_split, f"COCO 2014 captions, Karpathy {split} split")
            formats.captions_path(tmp, split).write_text(json.dumps(caps))

        questions, qhead, qdrop = _vqa_by_split([files[f] for f in QUESTION_FILES], "questions", split_of)
        annotations, ahead, _ = _vqa_by_split([files[f] for f in ANNOTATION_FILES], "annotations", split_of)
        (tmp / "vqa").mkdir()
        for split in SPLITS:
            q = {**qhead, "data_subtype": f"karpathy_{split}", "questions": questions[split]}
            a = {**ahead, "data_subtype": f"karpathy_{split}", "annotations": annotations[split]}
            formats.questions_path(tmp, split).write_text(json.dumps(q))
            formats.annotations_path(tmp, split).write_text(json.dumps(a))
        world = {
            "source": "coco",
            "raw": {k: str(v) for k, v in sorted(files.items())},
            "link": link,
            "counts": {
                "images": dict(Counter(e.split for e in entries)),
                "questions": {s: len(questions[s]) for s in SPLITS},
                "captions": {s: sum(len(e.captions) for e in entries if e.split == s) for s in SPLITS},
                "questions_without_karpathy_image": qdrop,
            },
        }
        (tmp / "world.json").write_text(json.dumps(world, indent=2) + "\n")
    return world
