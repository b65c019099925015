"""GQA and NLVR2: the embedded world's files, the official-format converters, the loaders' errors."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from vlpeft.config import WorldConfig
from vlpeft.data.gqa import load_gqa, parse_gqa, prepare_gqa
from vlpeft.data.images import image_table
from vlpeft.data.nlvr import load_image_names, load_nlvr, parse_nlvr, prepare_nlvr
from vlpeft.data.synth import generate_world
from vlpeft.errors import DataError

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtworld") / "w"
    cfg = WorldConfig(n_train=80, n_val=20, n_test=20, corpus_scenes=20, extra_tasks=["gqa", "nlvr"])
    generate_world(cfg, root, seed=3, progress=False)
    scenes = {s["image_id"]: s["objects"] for s in json.loads((root / "scenes.json").read_text())["scenes"]}
    return root, scenes


def test_gqa_like_questions_are_answerable_and_yes_no_balanced(world):
    root, scenes = world
    train = load_gqa(root, "train")
    assert {r.img_id for r in train} <= {str(i) for i in scenes}
    assert len({r.question_id for r in train}) == len(train)
    yes_no = Counter(r.answer for r in train if r.answer in ("yes", "no"))
    assert abs(yes_no["yes"] - yes_no["no"]) <= 0.25 * sum(yes_no.values())
    checked = 0
    for r in train:
        objs = scenes[int(r.img_id)]
        m = re.fullmatch(r"where is the (\w+) (\w+) \?", r.question)
        if m:
            (o,) = [o for o in objs if (o["color"], o["shape"]) == m.groups()]
            assert r.answer == o["quadrant"]
            checked += 1
        m = re.fullmatch(r"are there both a (\w+) (\w+) and a (\w+) (\w+) \?", r.question)
        if m:
            present = {(o["color"], o["shape"]) for o in objs}
            a, b = m.groups()[:2], m.groups()[2:]
            assert r.answer == ("yes" if a in present and b in present else "no")
            checked += 1
    assert checked > 10
    assert load_gqa(root, "valid") and load_gqa(root, "testdev")


def test_nlvr_like_statements_are_true_or_false_about_the_pair_and_balanced(world):
    root, scenes = world
    names = load_image_names(root)
    for split in ("train", "valid", "test"):
        records = load_nlvr(root, split)
        assert Counter(r.label for r in records)[0] == Counter(r.label for r in records)[1]
        # NLVR2's consistency groups (identifier with the pair id blanked): each sentence is true for one
        # pair of its set and false for the other
        groups: dict[str, list[int]] = {}
        for r in records:
            parts = r.identifier.split("-")
            groups.setdefault("-".join(parts[:2] + [""] + parts[3:]), []).append(r.label)
        assert groups and all(sorted(v) == [0, 1] for v in groups.values())
    checked = 0
    for r in load_nlvr(root, "train"):
        left, right = scenes[names[r.img0]["id"]], scenes[names[r.img1]["id"]]
        m = re.fullmatch(r"the (left|right) image contains exactly (\w+) shapes?", r.sentence)
        if m:
            side = left if m.group(1) == "left" else right
            assert r.label == int(len(side) == NUMBERS[m.group(2)])
            checked += 1
        m = re.fullmatch(r"the left image has more shapes than the right image", r.sentence)
        if m:
            assert r.label == int(len(left) > len(right))
            checked += 1
        m = re.fullmatch(r"both images contain a (\w+) shape", r.sentence)
        if m:
            c = m.group(1)
            assert r.label == int(any(o["color"] == c for o in left) and any(o["color"] == c for o in right))
            checked += 1
    assert checked > 5
    # the feature store's image table covers every NLVR2 image (they are world images)
    ids = {i for i, _ in image_table(root)}
    assert {e["id"] for e in names.values()} <= ids


def test_the_default_world_has_no_extra_task_files(tmp_path):
    generate_world(WorldConfig(n_train=4, n_val=2, n_test=2, corpus_scenes=2), tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / "gqa").exists() and not (tmp_path / "w" / "nlvr").exists()


def test_official_gqa_files_convert_to_the_lxmert_format(tmp_path):
    raw = tmp_path / "raw" / "questions1.2"
    raw.mkdir(parents=True)
    official = {
        "07333408": {"imageId": "2375429", "question": "What is on the table?", "answer": "pipe",
                     "fullAnswer": "The pipe is on the table.", "isBalanced": True},
        "n1": {"imageId": "n161313", "question": "Is it red?", "answer": "no"},
    }  # fmt: skip
    for name in ("train", "val", "testdev"):
        (raw / f"{name}_balanced_questions.json").write_text(json.dumps(official))
    counts = prepare_gqa(tmp_path / "raw", tmp_path / "out")
    assert counts == {"train": 2, "valid": 2, "testdev": 2}
    rows = json.loads((tmp_path / "out" / "gqa" / "train.json").read_text())
    assert rows[0] == {"img_id": "2375429", "label": {"pipe": 1.0}, "question_id": "07333408",
                       "sent": "What is on the table?"}  # fmt: skip
    rec = load_gqa(tmp_path / "out", "valid")[1]
    assert (rec.question_id, rec.img_id, rec.answer) == ("n1", "n161313", "no")


def test_official_nlvr_lines_convert_to_the_lxmert_format(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [
        {"identifier": "dev-850-0-0", "sentence": "The right image shows a walkway.", "label": "False",
         "left_url": "u", "right_url": "v", "writer": "61"},
        {"identifier": "dev-850-0-1", "sentence": "Two dogs.", "label": "True"},
    ]  # fmt: skip
    for name in ("train", "dev", "test1"):
        (raw / f"{name}.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert prepare_nlvr(raw, tmp_path / "out") == {"train": 2, "valid": 2, "test": 2}
    rows = json.loads((tmp_path / "out" / "nlvr" / "valid.json").read_text())
    want = {"identifier": "dev-850-0-0", "img0": "dev-850-0-img0", "img1": "dev-850-0-img1", "label": 0,
            "sent": "The right image shows a walkway.", "uid": "nlvr2_valid_0"}  # fmt: skip
    assert rows[0] == want
    recs = load_nlvr(tmp_path / "out", "valid")
    assert recs[1].label == 1 and recs[1].answer == "true" and recs[0].image_set == recs[1].image_set


def test_nothing_is_written_when_one_official_file_is_bad(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = json.dumps({"identifier": "train-1-0-0", "sentence": "x", "label": "True"})
    (raw / "train.json").write_text(good + "\n")
    (raw / "dev.json").write_text(good + "\n")
    (raw / "test1.json").write_text(good + "\n" + json.dumps({"identifier": "t-1-0-1", "label": "yes",
                                                               "sentence": "y"}) + "\n")  # fmt: skip
    with pytest.raises(DataError, match=r"test1.json: line 2: label must be 'True' or 'False'"):
        prepare_nlvr(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"img_id": "1", "label": {"a": 1.0}, "sent": "q"}, r"record 1: missing field 'question_id'"),
        ({"img_id": "1", "label": {"a": 1, "b": 1}, "question_id": "9", "sent": "q"},
         r"record 1 \(question_id '9'\): label must be one"),
        ({"img_id": "1", "label": {"a": 1.0}, "question_id": "1", "sent": "q"},
         r"record 1 \(question_id '1'\): question_id appears twice"),
    ],
)  # fmt: skip
def test_gqa_loader_names_file_and_record(record, message):
    good = {"img_id": "1", "label": {"a": 1.0}, "question_id": "1", "sent": "what ?"}
    with pytest.raises(DataError, match=f"gqa/train.json: {message}"):
        parse_gqa([good, record], "gqa/train.json")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"identifier": "a-1-0-0", "img0": "x", "img1": "y", "label": 1, "sent": "s"},
         r"record 0: missing field 'uid'"),
        ({"identifier": "a-1-0-0", "img0": "x", "img1": "y", "label": "True", "sent": "s", "uid": "u"},
         r"record 0 \(uid 'u'\): label must be 0 or 1"),
        ({"identifier": "a-1", "img0": "x", "img1": "y", "label": 1, "sent": "s", "uid": "u"},
         r"identifier 'a-1' is not split-set-pair-sentence"),
    ],
)  # fmt: skip
def test_nlvr_loader_names_file_and_record(record, message, tmp_path):
    path = tmp_path / "nlvr" / "train.json"
    path.parent.mkdir()
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError, match=message):
        load_nlvr(tmp_path, "train")
    with pytest.raises(DataError, match="expected a JSON list"):
        parse_nlvr({"a": 1}, "f.json")
