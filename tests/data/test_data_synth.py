"""The synthetic shapes world: determinism, formats, and that answers need the image."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from vlpeft.config import WorldConfig
from vlpeft.data.formats import SPLITS
from vlpeft.data.scenes import attribute_blocks, attribute_labels, attribute_names, sample_scene
from vlpeft.data.synth import corpus_lines, generate_world
from vlpeft.eval import answer_accuracy

SMALL = WorldConfig(image_size=16, n_train=600, n_val=2, n_test=300, corpus_scenes=0)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "w"
    generate_world(SMALL, root, seed=3, progress=False)
    return root


def _vqa(root: Path, split: str) -> tuple[list[dict], list[dict]]:
    q = json.loads((root / "vqa" / f"{split}_questions.json").read_text())["questions"]
    a = json.loads((root / "vqa" / f"{split}_annotations.json").read_text())["annotations"]
    return q, a


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = WorldConfig(image_size=16, n_train=6, n_val=2, n_test=2, corpus_scenes=5)
    generate_world(cfg, tmp_path / "a", seed=1, progress=False)
    generate_world(cfg, tmp_path / "b", seed=1, progress=False)
    generate_world(cfg, tmp_path / "c", seed=2, progress=False)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert set(a) == set(c) and a != c
    assert sum(a[k] != c[k] for k in a) > len(a) // 2


def test_first_images_do_not_depend_on_split_sizes(tmp_path):
    generate_world(
        WorldConfig(image_size=16, n_train=3, n_val=1, n_test=1, corpus_scenes=0), tmp_path / "a", 0, False
    )
    generate_world(
        WorldConfig(image_size=16, n_train=5, n_val=1, n_test=1, corpus_scenes=0), tmp_path / "b", 0, False
    )
    for i in (1, 2, 3):
        name = f"images/train/train_{i:06d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_layout_and_counts(tiny_world):
    world = json.loads((tiny_world / "world.json").read_text())
    assert world["seed"] == 0 and world["config"]["image_size"] == 32
    assert world["counts"]["images"] == {"train": 24, "val": 8, "test": 8}
    for split, n in world["counts"]["images"].items():
        files = sorted((tiny_world / "images" / split).iterdir())
        assert len(files) == n
        img = Image.open(files[0])
        assert img.size == (32, 32) and img.mode == "RGB"
    scenes = json.loads((tiny_world / "scenes.json").read_text())
    assert len(scenes["scenes"]) == 40
    assert scenes["attributes"]["labels"] == attribute_names()
    lines = (tiny_world / "corpus.txt").read_text().splitlines()
    assert len(lines) == world["counts"]["corpus_lines"] == 30 * 9
    assert not list(tiny_world.parent.glob(".synthetic.*")), "temp build dir left behind"


def test_karpathy_and_coco_formats(tiny_world):
    karpathy = json.loads((tiny_world / "dataset_coco.json").read_text())
    assert karpathy["dataset"] == "coco"
    sentids = [s for im in karpathy["images"] for s in im["sentids"]]
    assert len(sentids) == len(set(sentids)) == 40 * 5
    for imgid, im in enumerate(karpathy["images"]):
        assert im["imgid"] == imgid and im["split"] == im["filepath"] in SPLITS
        assert (tiny_world / "images" / im["filepath"] / im["filename"]).is_file()
        assert [s["sentid"] for s in im["sentences"]] == im["sentids"]
        assert all(s["imgid"] == imgid and s["tokens"] for s in im["sentences"])
    for split in SPLITS:
        coco = COCO(str(tiny_world / f"captions_{split}.json"))  # pycocotools must accept it
        ids = sorted(coco.getImgIds())
        assert ids == sorted(im["cocoid"] for im in karpathy["images"] if im["split"] == split)
        assert all(len(coco.getAnnIds(imgIds=i)) == 5 for i in ids)


def test_vqa_files_consistent(tiny_world):
    karpathy = json.loads((tiny_world / "dataset_coco.json").read_text())
    qids = set()
    for split in SPLITS:
        qs, anns = _vqa(tiny_world, split)
        split_images = {im["cocoid"] for im in karpathy["images"] if im["split"] == split}
        assert len(qs) == len(anns) == 4 * len(split_images)
        for q, a in zip(qs, anns, strict=True):
            assert q["question_id"] == a["question_id"] and q["image_id"] == a["image_id"] in split_images
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert a["answer_type"] in {"yes/no", "number", "other"}
            counts = Counter(x["answer"] for x in a["answers"])
            assert counts[a["multiple_choice_answer"]] == max(counts.values())
            qids.add(q["question_id"])
        texts = defaultdict(list)
        for q in qs:
            texts[q["image_id"]].append(q["question"])
        assert all(len(t) == len(set(t)) for t in texts.values()), "duplicate question for one image"
    assert len(qids) == 160


def test_answers_depend_on_the_image(small_world):
    train_q, train_a = _vqa(small_world, "train")
    test_q, test_a = _vqa(small_world, "test")
    # The same question text gets different correct answers in different images.
    by_text = defaultdict(list)
    for q, a in zip(train_q, train_a, strict=True):
        by_text[q["question"]].append(a["correct_answer"])
    assert set(by_text["how many shapes are there ?"]) == {"1", "2", "3", "4"}
    assert set(by_text["is there a red circle ?"]) == {"yes", "no"}
    frequent = [set(v) for v in by_text.values() if len(v) >= 10]
    assert len(frequent) > 20 and all(len(v) > 1 for v in frequent)
    # A blind exact-question lookup table (most frequent train answer per text) is far from perfect.
    table = defaultdict(Counter)
    majority = Counter()
    for q, a in zip(train_q, train_a, strict=True):
        table[q["question"]][a["multiple_choice_answer"]] += 1
        majority[a["multiple_choice_answer"]] += 1
    top = majority.most_common(1)[0][0]
    accs, correct = [], []
    for q, a in zip(test_q, test_a, strict=True):
        guess = table[q["question"]].most_common(1)[0][0] if q["question"] in table else top
        accs.append(answer_accuracy([x["answer"] for x in a["answers"]], guess))
        correct.append(guess == a["correct_answer"])
    assert np.mean(accs) < 0.65, f"question-only prior too strong: {np.mean(accs):.2f}"
    assert np.mean(correct) < 0.7


def test_answer_statistics(small_world):
    qs, anns = _vqa(small_world, "train")
    types = Counter(a["answer_type"] for a in anns)
    n = len(anns)
    assert 0.40 < types["other"] / n < 0.60 and 0.22 < types["yes/no"] / n < 0.38
    assert 0.12 < types["number"] / n < 0.28
    exist = [
        a["correct_answer"] for q, a in zip(qs, anns, strict=True) if q["question"].startswith("is there")
    ]
    assert 0.4 < exist.count("yes") / len(exist) < 0.6
    right = np.mean([x["answer"] == a["correct_answer"] for a in anns for x in a["answers"]])
    assert abs(right - 0.9) < 0.02  # annotator_accuracy
    # Noise answers come from the question kind's pool: a colour question never gets a shape.
    for a in anns:
        if a["question_kind"] == "color":
            assert {x["answer"] for x in a["answers"]} <= {
                "red",
                "green",
                "blue",
                "yellow",
                "purple",
                "orange",
            }
    assert len({a["multiple_choice_answer"] for a in anns}) == 19


def test_scenes_match_questions_and_captions(tiny_world):
    scenes = {s["image_id"]: s for s in json.loads((tiny_world / "scenes.json").read_text())["scenes"]}
    qs, anns = _vqa(tiny_world, "train")
    for q, a in zip(qs, anns, strict=True):
        objs = scenes[q["image_id"]]["objects"]
        if q["question"] == "how many shapes are there ?":
            assert a["correct_answer"] == str(len(objs))
        if q["question"].startswith("is there a"):
            color, shape = q["question"].split()[3:5]
            assert (a["correct_answer"] == "yes") == any(
                o["color"] == color and o["shape"] == shape for o in objs
            )
    for s in scenes.values():
        quads = [o["quadrant"] for o in s["objects"]]
        pairs = [(o["color"], o["shape"]) for o in s["objects"]]
        assert 1 <= len(quads) <= 4 and len(set(quads)) == len(quads) and len(set(pairs)) == len(pairs)


def test_corpus_comes_from_unrendered_scenes():
    cfg = WorldConfig(n_train=10, corpus_scenes=20)
    lines = corpus_lines(cfg, seed=0)
    assert lines == corpus_lines(cfg.model_copy(update={"n_train": 99}), seed=0)
    assert len(lines) == 20 * 9 and any(line.endswith((" yes", " no")) for line in lines)
    assert lines != corpus_lines(cfg, seed=1)


def test_attribute_labels():
    names = attribute_names()
    assert len(names) == 84 == len(set(names))
    blocks = attribute_blocks()
    assert [b.stop - b.start for b in blocks.values()] == [24, 8, 4, 24, 16, 8]
    scene = {
        "objects": [
            {"shape": "circle", "color": "red", "size": "small", "quadrant": "top left", "x": 0.2, "y": 0.2},
            {
                "shape": "cross",
                "color": "blue",
                "size": "large",
                "quadrant": "bottom right",
                "x": 0.8,
                "y": 0.7,
            },
        ]
    }
    y = attribute_labels(scene)
    on = {names[i] for i in np.flatnonzero(y)}
    assert on == {
        "color_shape:red circle",
        "color_shape:blue cross",
        "size_shape:small circle",
        "size_shape:large cross",
        "count:2",
        "quadrant_color:top left:red",
        "quadrant_color:bottom right:blue",
        "quadrant_shape:top left:circle",
        "quadrant_shape:bottom right:cross",
        "quadrant_size:top left:small",
        "quadrant_size:bottom right:large",
    }
    assert y.dtype == np.float32 and np.array_equal(attribute_labels(scene["objects"]), y)
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = sample_scene(rng)
        lab = attribute_labels(s)
        assert lab[blocks["count"]].sum() == 1 and lab[blocks["color_shape"]].sum() == len(s["objects"])


def test_cli_synth(tmp_path, capsys):
    from vlpeft.cli import main

    sets = [
        "world.image_size=16",
        "world.n_train=4",
        "world.n_val=2",
        "world.n_test=2",
        "world.corpus_scenes=3",
    ]
    argv = ["data", "synth", "--out", str(tmp_path / "w"), "--seed", "5"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    world = json.loads((tmp_path / "w" / "world.json").read_text())
    assert world["seed"] == 5 and world["counts"]["images"] == {"train": 4, "val": 2, "test": 2}
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--set", "world.n_train=0"]) == 2
    assert "world.n_train" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
