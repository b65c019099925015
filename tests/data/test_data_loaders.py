"""Caption/VQA loaders and the image table on the tiny world, and their errors on malformed input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlpeft.data.coco import CaptionRecord, load_captions
from vlpeft.data.images import image_table, load_image, split_images
from vlpeft.data.vqa import VqaRecord, load_vqa
from vlpeft.errors import DataError


@pytest.fixture
def world(tiny_world, tmp_path) -> Path:
    """A private copy of the tiny world that a test may corrupt."""
    root = tmp_path / "w"
    shutil.copytree(tiny_world, root)
    return root


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_load_captions(tiny_world):
    recs = load_captions(tiny_world, "val")
    assert len(recs) == 8 and all(isinstance(r, CaptionRecord) for r in recs)
    assert all(len(r.captions) == 5 and r.path.is_file() for r in recs)
    gt = json.loads((tiny_world / "captions_val.json").read_text())
    by_id = {}
    for ann in gt["annotations"]:
        by_id.setdefault(ann["image_id"], []).append(ann["caption"])
    assert {r.image_id: r.captions for r in recs} == by_id


def test_load_vqa(tiny_world):
    recs = load_vqa(tiny_world, "train")
    assert len(recs) == 24 * 4 and all(isinstance(r, VqaRecord) for r in recs)
    paths = split_images(tiny_world, "train")
    for r in recs:
        assert len(r.answers) == 10 and r.path == paths[r.image_id]
        assert r.answer_type in {"yes/no", "number", "other"} and r.question.endswith("?")
    assert {r.image_id for r in recs} == set(paths)


def test_image_table_covers_every_split(tiny_world):
    table = image_table(tiny_world)
    assert len(table) == 40 == len({i for i, _ in table})
    assert [p.parent.name for _, p in table] == ["train"] * 24 + ["val"] * 8 + ["test"] * 8
    assert load_image(table[0][1]).size == (32, 32)


def test_missing_field_in_annotation_names_file_and_record(world):
    path = world / "vqa" / "val_annotations.json"
    qid = json.loads(path.read_text())["annotations"][3]["question_id"]
    _edit(path, lambda d: d["annotations"][3].pop("answers"))
    with pytest.raises(DataError) as err:
        load_vqa(world, "val")
    assert str(err.value) == f"{path}: annotation 3 (question_id {qid}): missing field 'answers'"


def test_missing_field_in_question(world):
    path = world / "vqa" / "test_questions.json"
    _edit(path, lambda d: d["questions"][5].pop("question"))
    with pytest.raises(
        DataError, match=r"test_questions.json: question 5 \(question_id \d+\): missing field 'question'"
    ):
        load_vqa(world, "test")


def test_unknown_image_id(world):
    path = world / "vqa" / "val_questions.json"

    def bad(d):
        d["questions"][0]["image_id"] = 999999

    _edit(path, bad)
    _edit(world / "vqa" / "val_annotations.json", lambda d: d["annotations"][0].update(image_id=999999))
    with pytest.raises(
        DataError, match=r"val_questions.json: question 0 .*unknown image_id 999999 .*split 'val'"
    ):
        load_vqa(world, "val")


def test_question_without_annotation(world):
    _edit(world / "vqa" / "val_annotations.json", lambda d: d["annotations"].pop(2))
    with pytest.raises(DataError, match=r"val_questions.json: question 2 .*no annotation"):
        load_vqa(world, "val")


def test_empty_split(world):
    _edit(world / "vqa" / "val_questions.json", lambda d: d["questions"].clear())
    with pytest.raises(DataError, match=r"val_questions.json: split 'val' has no questions"):
        load_vqa(world, "val")
    _edit(
        world / "dataset_coco.json",
        lambda d: d.update(images=[i for i in d["images"] if i["split"] != "test"]),
    )
    with pytest.raises(DataError, match=r"dataset_coco.json: split 'test' has no images"):
        load_captions(world, "test")


def test_missing_and_malformed_files(world):
    (world / "vqa" / "train_annotations.json").unlink()
    with pytest.raises(DataError, match=r"train_annotations.json: VQA annotations file not found"):
        load_vqa(world, "train")
    (world / "dataset_coco.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset_coco.json: not valid JSON"):
        load_captions(world, "train")
    with pytest.raises(DataError, match=r"split 'dev' is not one of train, val, test"):
        load_captions(world, "dev")


def test_karpathy_missing_field_and_missing_image(world):
    _edit(world / "dataset_coco.json", lambda d: d["images"][4].pop("filename"))
    with pytest.raises(DataError, match=r"dataset_coco.json: image 4 \(cocoid 5\): missing field 'filename'"):
        image_table(world)
    _edit(world / "dataset_coco.json", lambda d: d["images"][4].update(filename="train_000005.png"))
    (world / "images" / "train" / "train_000005.png").unlink()
    with pytest.raises(DataError, match=r"cocoid 5: file .*train_000005.png not found"):
        load_captions(world, "train")


def test_unreadable_image(world):
    path = world / "images" / "val" / sorted(p.name for p in (world / "images" / "val").iterdir())[0]
    path.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"{path}: unreadable image"):
        load_image(path)
    with pytest.raises(DataError, match="image file not found"):
        load_image(world / "nope.png")
