"""``vlpeft data prepare --source own``: a user's own VQA and caption data -> the data layout (``formats.py``).

Input folder ``raw`` (any image file names, sub-folders allowed)::

    images/...                                   the image files (names in the data files are relative to it)
    <split>_vqa.json                             VQA as a JSON list of {"image", "question", "answers" | "answer"}
    <split>_questions.json + <split>_annotations.json      or VQA in the VQAv2 format (image_id per question)
    <split>_captions.json                        captions: COCO captions JSON ({"images", "annotations"}) or a
                                                 JSON list of {"image", "caption"}

``<split>`` is ``train``, ``val`` or ``test``; ``train`` is required. A split without files is carved out of
train by image (10 % each, at least one, chosen by a hash of the image name: the same names give the same
splits). VQAv2 files
name images by ``image_id``: the id comes from an ``images`` list ({"id", "file_name"}) in any of the split's
files (COCO captions have one), else from the last number in an image's file name (``COCO_val2014_000000000042
.jpg``, ``img42.png`` -> 42). Image ids are renumbered (1..N by name); question ids are kept (a list gets
1..N). A single ``answer`` counts as ten agreeing annotators (the official accuracy needs several answers).

Every record is checked like our own data: one ``DataError`` line naming the file and the record. An image in
two splits is refused (VQA and captioning must not test on training images); in a split with captions every
image needs one. Images are linked into
``images/<split>/<name>`` (``--link``); nothing is read or written outside ``raw`` and ``out``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlpeft.data import formats
from vlpeft.data.formats import SPLITS, ImageEntry, VqaEntry
from vlpeft.data.paths import destination, inside, relative_name
from vlpeft.data.prepare import LINKS, link_image
from vlpeft.errors import DataError
from vlpeft.io import atomic_dir, read_json

IMAGES_DIR = "images"
HOLDOUT = ("test", "val")  # the splits that train gives images to when they have no files
_YES_NO = {"yes", "no"}


@dataclass
class _Question:
    image: str  # image name relative to images/ (normalised: relative_name(...).as_posix())
    question: str
    answers: list[str]
    question_id: int | None


@dataclass
class _Split:
    questions: list[_Question] = field(default_factory=list)
    captions: dict[str, list[str]] = field(default_factory=dict)  # image name -> captions
    files: list[str] = field(default_factory=list)


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _record(data: Any, i: int, path: Path, keys: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    where = f"{path}: record {i}"
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected an object, got {type(data).__name__}")
    for key in keys:
        if key not in data:
            raise DataError(f"{where}: missing field {key!r}")
    return data, where


def _answers(rec: dict[str, Any], where: str) -> list[str]:
    if "answers" in rec:
        raw = rec["answers"]
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{where}: field 'answers' must be a non-empty list")
        out = []
        for j, a in enumerate(raw):
            a = a.get("answer") if isinstance(a, dict) else a  # VQAv2 answer dicts or plain strings
            out.append(_text(a, f"answers[{j}]", where))
        return out
    if "answer" in rec:
        return [_text(rec["answer"], "answer", where)] * 10
    raise DataError(f"{where}: missing field 'answers' (or 'answer')")


def _qid(rec: dict[str, Any], where: str) -> int | None:
    qid = rec.get("question_id")
    if qid is not None and (not isinstance(qid, int) or isinstance(qid, bool)):
        raise DataError(f"{where}: question_id must be an integer, got {qid!r}")
    return qid


def _list_file(path: Path, what: str) -> list[Any]:
    data = read_json(path, what)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no records")
    return data


def _images_list(data: Any, path: Path) -> dict[int, str]:
    """A COCO-style ``images`` list {id -> file_name} of one file (empty when it has none)."""
    out: dict[int, str] = {}
    images = data.get("images") if isinstance(data, dict) else None
    if images is None:
        return out
    if not isinstance(images, list):
        raise DataError(f"{path}: field 'images' must be a list")
    for i, im in enumerate(images):
        rec, where = _record(im, i, path, ("id", "file_name"))
        where = f"{path}: image {i}"
        name = relative_name(rec["file_name"], where).as_posix()
        if not isinstance(rec["id"], int) or out.get(rec["id"], name) != name:
            raise DataError(f"{where}: id {rec['id']!r} is not an integer or names two files")
        out[rec["id"]] = name
    return out


class _ImageIds:
    """Image id -> name for VQAv2 files: the files' ``images`` lists, else the last number in a file name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.listed: dict[int, str] = {}
        self._by_number: dict[int, list[str]] | None = None

    def add(self, listed: dict[int, str]) -> None:
        self.listed.update(listed)

    def name(self, image_id: Any, where: str) -> str:
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise DataError(f"{where}: image_id must be an integer, got {image_id!r}")
        if image_id in self.listed:
            return self.listed[image_id]
        if self._by_number is None:
            self._by_number = {}
            for p in sorted(self.root.rglob("*")):
                numbers = re.findall(r"\d+", p.stem)
                if p.is_file() and numbers:
                    self._by_number.setdefault(int(numbers[-1]), []).append(p.relative_to(self.root).as_posix())
        names = self._by_number.get(image_id, [])
        if len(names) != 1:
            found = "no image file" if not names else f"{len(names)} image files ({', '.join(names[:3])})"
            raise DataError(
                f"{where}: image_id {image_id}: {found} under {self.root} with that number in its name "
                "(add an 'images' list of {id, file_name} to the file)"
            )
        return names[0]


def _read_vqa_list(path: Path, split: _Split) -> None:
    for i, item in enumerate(_list_file(path, "VQA list")):
        rec, where = _record(item, i, path, ("image", "question"))
        name = relative_name(rec["image"], where).as_posix()
        q = _text(rec["question"], "question", where)
        split.questions.append(_Question(name, q, _answers(rec, where), _qid(rec, where)))


def _read_vqav2(qpath: Path, apath: Path, split: _Split, ids: _ImageIds) -> None:
    qdata, adata = read_json(qpath, "VQA questions file"), read_json(apath, "VQA annotations file")
    for data, path, key in ((qdata, qpath, "questions"), (adata, apath, "annotations")):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{path}: expected a VQAv2 object with a {key!r} list")
        ids.add(_images_list(data, path))
    answers: dict[int, tuple[list[str], int]] = {}
    for i, item in enumerate(adata["annotations"]):
        rec, where = _record(item, i, apath, ("question_id", "image_id", "answers"))
        qid = _qid(rec, where)
        if qid in answers:
            raise DataError(f"{where}: duplicate question_id {qid}")
        answers[qid] = (_answers(rec, where), rec["image_id"])
    seen: set[int] = set()
    for i, item in enumerate(qdata["questions"]):
        rec, where = _record(item, i, qpath, ("question_id", "image_id", "question"))
        qid = _qid(rec, where)
        if qid in seen:
            raise DataError(f"{where}: duplicate question_id {qid}")
        seen.add(qid)
        if qid not in answers:
            raise DataError(f"{where}: question_id {qid} has no annotation in {apath}")
        ans, image_id = answers[qid]
        if image_id != rec["image_id"]:
            raise DataError(f"{where}: image_id {rec['image_id']} differs from its annotation's {image_id}")
        name = ids.name(rec["image_id"], where)
        split.questions.append(_Question(name, _text(rec["question"], "question", where), ans, qid))
    extra = set(answers) - seen
    if extra:
        raise DataError(f"{apath}: question_id {min(extra)} has no question in {qpath}")


def _read_captions(path: Path, split: _Split) -> None:
    data = read_json(path, "caption file")
    if isinstance(data, list):
        for i, item in enumerate(_list_file(path, "caption list")):
            rec, where = _record(item, i, path, ("image", "caption"))
            name = relative_name(rec["image"], where).as_posix()
            split.captions.setdefault(name, []).append(_text(rec["caption"], "caption", where))
        return
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: expected a COCO captions object (images, annotations) or a list of records")
    names = _images_list(data, path)
    for i, item in enumerate(data["annotations"]):
        rec, where = _record(item, i, path, ("image_id", "caption"))
        if rec["image_id"] not in names:
            raise DataError(f"{where}: image_id {rec['image_id']!r} is not in the file's images list")
        split.captions.setdefault(names[rec["image_id"]], []).append(_text(rec["caption"], "caption", where))


def _read_split(raw: Path, name: str, ids: _ImageIds) -> _Split:
    split = _Split()
    listed, qpath, apath = raw / f"{name}_vqa.json", raw / f"{name}_questions.json", raw / f"{name}_annotations.json"
    caps = raw / f"{name}_captions.json"
    if caps.is_file():  # first: a COCO caption file's images list names the VQAv2 files' image ids too
        ids.add(_images_list(read_json(caps, "caption file"), caps))
    if listed.is_file() and (qpath.is_file() or apath.is_file()):
        raise DataError(f"{raw}: both {listed.name} and VQAv2 files for split {name!r}; keep one")
    if listed.is_file():
        _read_vqa_list(listed, split)
        split.files.append(listed.name)
    elif qpath.is_file() or apath.is_file():
        missing = apath if qpath.is_file() else qpath
        if not missing.is_file():
            raise DataError(f"{missing}: not found (VQAv2 needs both questions and annotations)")
        _read_vqav2(qpath, apath, split, ids)
        split.files += [qpath.name, apath.name]
    if caps.is_file():
        _read_captions(caps, split)
        split.files.append(caps.name)
    return split


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _carve(splits: dict[str, _Split]) -> dict[str, str]:
    """Move images of train into the splits without files (10 % each, at least one, by the hash of the
    image name: the same names always give the same splits); returns split -> where it came from."""
    how = {s: "files" for s in SPLITS if splits[s].files}
    train = splits["train"]
    pool = sorted(set(_images_of(train)), key=_rank)
    size = max(1, len(pool) // 10)
    for name in HOLDOUT:
        if splits[name].files:
            continue
        take, pool = set(pool[:size]), pool[size:]
        target = splits[name]
        target.questions = [q for q in train.questions if q.image in take]
        train.questions = [q for q in train.questions if q.image not in take]
        target.captions = {k: v for k, v in train.captions.items() if k in take}
        train.captions = {k: v for k, v in train.captions.items() if k not in take}
        how[name] = f"carved from train ({len(take)} images chosen by name hash)"
    return how


def _answer_type(answer: str) -> str:
    return "yes/no" if answer in _YES_NO else "number" if answer.isdigit() else "other"


def read_own_data(raw: str | Path) -> tuple[dict[str, _Split], dict[str, str]]:
    """Every split of a user's data folder, checked (see the module docstring); no file is written."""
    raw = Path(raw)
    if not (raw / IMAGES_DIR).is_dir():
        raise DataError(f"{raw}: no {IMAGES_DIR}/ folder (the image files go there)")
    ids = _ImageIds(raw / IMAGES_DIR)
    splits = {s: _read_split(raw, s, ids) for s in SPLITS}
    if not splits["train"].files:
        raise DataError(
            f"{raw}: no train data (train_vqa.json, train_questions.json + train_annotations.json or "
            "train_captions.json)"
        )
    how = _carve(splits)
    owner: dict[str, str] = {}
    for name, split in splits.items():
        if not split.questions and not split.captions:
            raise DataError(f"{raw}: split {name!r} has no records ({how[name]})")
        for key in _images_of(split):
            if owner.setdefault(key, name) != name:
                raise DataError(
                    f"{raw}: image {key!r} is in split {owner[key]!r} and {name!r} (a test image must not "
                    "be trained on)"
                )
            if not (raw / IMAGES_DIR / key).is_file():
                raise DataError(f"{raw}: split {name}: image {key!r} not found under {raw / IMAGES_DIR}")
    for name, split in splits.items():
        if split.captions:  # the caption loader reads every image of a split that has captions
            bare = sorted({q.image for q in split.questions} - set(split.captions))
            if bare:
                raise DataError(
                    f"{raw}: split {name}: image {bare[0]!r} has questions but no caption, while the split has "
                    "captions (captioning reads every image of its split): caption it or leave captions out"
                )
    return splits, how


def prepare_own(
    raw: str | Path, out: str | Path, link: str = "symlink", progress: bool = True
) -> dict[str, Any]:
    """Write the data layout for a user's own data under ``out``; return the provenance (``world.json``)."""
    if link not in LINKS:
        raise DataError(f"--link {link!r}: choose symlink, hardlink or copy")
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{raw}: data folder not found")
    splits, how = read_own_data(raw)
    names = sorted({i for s in splits.values() for i in _images_of(s)})
    image_id = {name: i + 1 for i, name in enumerate(names)}
    used_qids = {q.question_id for s in splits.values() for q in s.questions if q.question_id is not None}
    next_qid = max(used_qids, default=0) + 1
    with atomic_dir(Path(out)) as tmp:
        entries: list[ImageEntry] = []
        vqa: dict[str, list[VqaEntry]] = {}
        for name, split in splits.items():
            folder = tmp / IMAGES_DIR / name
            folder.mkdir(parents=True)
            images = sorted(set(_images_of(split)))
            for im in tqdm(images, desc=f"link {name} images", unit="img", disable=not progress or None):
                where = f"{raw}: split {name}: image {im!r}"
                link_image(inside(raw / IMAGES_DIR, im, where), destination(folder, im, where), link)
                entries.append(ImageEntry(image_id[im], name, im, split.captions.get(im, [])))
            vqa[name] = []
            for q in split.questions:
                if q.question_id is None:
                    q.question_id, next_qid = next_qid, next_qid + 1
                mca = Counter(q.answers).most_common(1)[0][0]
                words = q.question.lower().rstrip("?").split()
                vqa[name].append(
                    VqaEntry(
                        q.question_id,
                        image_id[q.image],
                        q.question,
                        " ".join(words[:2]),
                        _answer_type(mca),
                        mca,
                        q.answers,
                    )
                )
        formats.karpathy_path(tmp).write_text(json.dumps(formats.karpathy(entries)))
        (tmp / "vqa").mkdir()
        for name in SPLITS:
            in_split = [e for e in entries if e.split == name]
            formats.captions_path(tmp, name).write_text(
                json.dumps(formats.coco_captions(in_split, f"own captions, {name} split"))
            )
            desc = f"own VQA, {name} split"
            formats.questions_path(tmp, name).write_text(json.dumps(formats.vqa_questions(vqa[name], name, desc)))
            formats.annotations_path(tmp, name).write_text(
                json.dumps(formats.vqa_annotations(vqa[name], name, desc))
            )
        world = {
            "source": "own",
            "raw": str(raw),
            "link": link,
            "splits": {s: {"from": how[s], "files": splits[s].files} for s in SPLITS},
            "counts": {
                "images": dict(Counter(e.split for e in entries)),
                "questions": {s: len(vqa[s]) for s in SPLITS},
                "captions": {s: sum(len(e.captions) for e in entries if e.split == s) for s in SPLITS},
            },
        }
        (tmp / "world.json").write_text(json.dumps(world, indent=2) + "\n")
    return world


def _images_of(split: _Split) -> list[str]:
    return [q.image for q in split.questions] + list(split.captions)
