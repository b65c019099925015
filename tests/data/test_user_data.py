"""``vlpeft data prepare --source own``: a user's VQA and caption data with any image names -> the layout our
loaders read; bad records are one line naming file and record; nothing is written outside ``--out`` (and
``--source coco`` likewise refuses names that leave its roots)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlpeft.cli import main
from vlpeft.data.coco import load_captions
from vlpeft.data.images import image_table, load_image
from vlpeft.data.userdata import prepare_own
from vlpeft.data.vqa import load_vqa

NAMES = [f"holiday {i}/IMG_{7000 + i}.jpeg" if i % 2 else f"scan-{i}.png" for i in range(12)]


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _images(raw: Path, names=NAMES) -> None:
    for i, name in enumerate(names):
        p = raw / "images" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10 + i, 8), (20 * i % 255, 40, 90)).save(
            p, "PNG" if name.endswith("png") else "JPEG"
        )


def _vqa_list(names) -> list[dict]:
    out = []
    for name in names:
        out.append({"image": name, "question": "is it red?", "answers": ["yes"] * 7 + ["no"] * 3})
        out.append({"image": name, "question": "how many dogs?", "answer": "2"})
    return out


@pytest.fixture
def raw_lists(tmp_path) -> Path:
    """Simple JSON lists: VQA for train/val/test, captions for train and test (val captions carved? no: the
    split has VQA files, so it is given; it then has no captions)."""
    raw = tmp_path / "raw"
    _images(raw)
    _write(raw / "train_vqa.json", _vqa_list(NAMES[:8]))
    _write(raw / "val_vqa.json", _vqa_list(NAMES[8:10]))
    _write(raw / "test_vqa.json", _vqa_list(NAMES[10:]))
    _write(raw / "train_captions.json", [{"image": n, "caption": f"photo {n}"} for n in NAMES[:8]])
    _write(raw / "test_captions.json", [{"image": n, "caption": "a test photo"} for n in NAMES[10:]])
    return raw


def test_json_lists_with_any_file_names_give_the_loader_layout(raw_lists, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "prepare", "--source", "own", "--raw", str(raw_lists), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    world = json.loads((out / "world.json").read_text())
    assert world["counts"]["images"] == {"train": 8, "val": 2, "test": 2}
    assert world["counts"]["questions"] == {"train": 16, "val": 4, "test": 4}
    table = image_table(out)
    assert len(table) == 12 and all(p.is_symlink() and load_image(p).size[1] == 8 for _, p in table)
    train = load_vqa(out, "train")
    names = {r.path.relative_to(out / "images" / "train").as_posix() for r in train}
    assert names == set(NAMES[:8])
    red = next(r for r in train if r.question == "is it red?")
    assert red.answers == ["yes"] * 7 + ["no"] * 3 and red.multiple_choice_answer == "yes"
    assert red.answer_type == "yes/no"
    count = next(r for r in train if r.question == "how many dogs?")
    assert count.answers == ["2"] * 10 and count.answer_type == "number"  # one answer = ten agreeing
    caps = load_captions(out, "train")
    assert sorted(c.captions[0] for c in caps) == sorted(f"photo {n}" for n in NAMES[:8])
    assert [c.captions for c in load_captions(out, "test")] == [["a test photo"]] * 2


def test_vqav2_files_and_coco_captions_with_carved_splits(tmp_path):
    """VQAv2 questions + annotations naming images by id (the number in the file name, or an images list in
    a COCO caption file); no val/test files: both carved out of train by image, stably."""
    raw = tmp_path / "raw"
    names = [f"street_{i:04d}.png" for i in range(1, 41)]
    _images(raw, names)
    questions = [
        {"image_id": i, "question": f"what is in {i}?", "question_id": 100 + i} for i in range(1, 41)
    ]
    annotations = [
        {
            "question_id": 100 + i,
            "image_id": i,
            "answers": [{"answer": "car", "answer_id": j} for j in range(10)],
        }
        for i in range(1, 41)
    ]
    _write(raw / "train_questions.json", {"questions": questions})
    _write(raw / "train_annotations.json", {"annotations": annotations})
    _write(
        raw / "train_captions.json",
        {
            "images": [{"id": 5000 + i, "file_name": n} for i, n in enumerate(names)],
            "annotations": [{"image_id": 5000 + i, "caption": f"street {i}"} for i in range(40)],
        },
    )
    world = prepare_own(raw, tmp_path / "a", progress=False)
    assert world["splits"]["train"]["from"] == "files" and "carved" in world["splits"]["val"]["from"]
    counts = world["counts"]["images"]
    assert sum(counts.values()) == 40 and counts["val"] > 0 and counts["test"] > 0
    by_split = {s: {r.question_id for r in load_vqa(tmp_path / "a", s)} for s in ("train", "val", "test")}
    assert set().union(*by_split.values()) == {100 + i for i in range(1, 41)}  # question ids kept
    for s in ("train", "val", "test"):
        for rec in load_vqa(tmp_path / "a", s):
            assert rec.path.name == f"street_{rec.question_id - 100:04d}.png"  # id from the name's number
    again = prepare_own(raw, tmp_path / "b", progress=False)
    assert again["counts"] == world["counts"]  # the carve is a function of the names


def _bad(raw: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "out"
    rc = main(["data", "prepare", "--source", "own", "--raw", str(raw), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists() and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r[3].pop("question"), r"train_vqa.json: record 3: missing field 'question'"),
        (lambda r: r[0].update(answers=[]), r"train_vqa.json: record 0: field 'answers' must be a non-empty"),
        (lambda r: r[2].update(answers=["yes", 4]), r"train_vqa.json: record 2: field 'answers\[1\]'"),
        (lambda r: r[1].update(image="nope.png"), r"image 'nope.png' not found"),
        (lambda r: r[5].update(image="/etc/passwd"), r"train_vqa.json: record 5: .*absolute path"),
        (lambda r: r[4].update(image="../../outside.png"), r"train_vqa.json: record 4: .*leaves its folder"),
        (lambda r: r.__setitem__(6, "text"), r"train_vqa.json: record 6: expected an object"),
        (lambda r: r[0].update(image=NAMES[10]), r"is in split 'train' and 'test'"),
    ],
)
def test_bad_records_are_one_line_naming_file_and_record(raw_lists, tmp_path, capsys, edit, message):
    records = json.loads((raw_lists / "train_vqa.json").read_text())
    edit(records)
    _write(raw_lists / "train_vqa.json", records)
    import re

    assert re.search(message, _bad(raw_lists, tmp_path, capsys))


def test_bad_vqav2_and_caption_files(raw_lists, tmp_path, capsys):
    (raw_lists / "val_vqa.json").unlink()
    _write(
        raw_lists / "val_questions.json", {"questions": [{"image_id": 9, "question": "q?", "question_id": 1}]}
    )
    assert "val_annotations.json: not found" in _bad(raw_lists, tmp_path, capsys)
    _write(raw_lists / "val_annotations.json", {"annotations": []})
    assert "val_questions.json: record 0: question_id 1 has no annotation" in _bad(
        raw_lists, tmp_path, capsys
    )
    _write(
        raw_lists / "val_annotations.json",
        {"annotations": [{"question_id": 1, "image_id": 9, "answers": ["x"]}]},
    )
    err = _bad(raw_lists, tmp_path, capsys)
    assert "val_questions.json: record 0: image_id 9: no image file" in err  # no name holds the number 9
    _write(raw_lists / "train_captions.json", [{"image": NAMES[0]}])
    (raw_lists / "val_questions.json").unlink()
    (raw_lists / "val_annotations.json").unlink()
    assert "train_captions.json: record 0: missing field 'caption'" in _bad(raw_lists, tmp_path, capsys)


def test_no_train_data_or_no_images_folder(tmp_path, capsys):
    (tmp_path / "raw" / "images").mkdir(parents=True)
    assert "no train data" in _bad(tmp_path / "raw", tmp_path, capsys)
    (tmp_path / "raw" / "images").rmdir()
    assert "no images/ folder" in _bad(tmp_path / "raw", tmp_path, capsys)


# -------------------------------------------------------------------------- issue 24 item 3: --source coco


def _coco_raw(root: Path, filename: str, filepath: str = "val2014") -> Path:
    raw = root / "raw"
    for d in ("train2014", "val2014"):
        (raw / d).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(raw / "val2014" / "COCO_val2014_000000000001.jpg")
    images = [
        {
            "filepath": filepath,
            "filename": filename,
            "cocoid": 1,
            "split": "train",
            "sentences": [{"raw": "a"}],
        }
    ]
    _write(raw / "dataset_coco.json", {"images": images})
    for part in ("train", "val"):
        _write(raw / f"v2_OpenEnded_mscoco_{part}2014_questions.json", {"questions": []})
        _write(raw / f"v2_mscoco_{part}2014_annotations.json", {"annotations": []})
    return raw


@pytest.mark.parametrize("link", ["symlink", "copy", "hardlink"])
@pytest.mark.parametrize(
    ("filename", "filepath"),
    [
        ("../../../../x", "val2014"),
        ("../../victim.txt", "val2014"),
        ("/tmp/abs.jpg", "val2014"),
        ("COCO_val2014_000000000001.jpg", "../../elsewhere"),
    ],
)
def test_coco_prepare_never_leaves_its_roots(tmp_path, capsys, link, filename, filepath):
    raw = _coco_raw(tmp_path, filename, filepath)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    before = sorted(p for p in tmp_path.rglob("*"))
    out = tmp_path / "work" / "coco"
    rc = main(["data", "prepare", "--source", "coco", "--raw", str(raw), "--out", str(out), "--link", link])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "image cocoid 1" in err
    assert ("absolute path" in err) or ("leaves its folder" in err)
    assert victim.read_text() == "keep me" and not out.exists()
    assert sorted(p for p in tmp_path.rglob("*") if "work" not in p.parts) == before  # nothing new anywhere
