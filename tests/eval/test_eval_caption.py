"""Caption metrics: ours vs pycocoevalcap's own COCOEvalCap pipeline on the same files (Java needed).

Two JVM-heavy evaluations in total (METEOR costs ~4.5 s to start): ours, then the official one.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from vlpeft.errors import DataError, MissingProgramError
from vlpeft.eval import (
    check_caption_inputs,
    evaluate_caption_files,
    load_caption_references,
    spice_available,
)
from vlpeft.eval.caption import cider_score, score_captions

WORDS = ["a", "red", "blue", "green", "square", "circle", "triangle", "small", "large", "on", "the", "left"]
WORDS += ["right", "top", "bottom", "two", "three", "objects", "scene", "with", "and", "near", "Red", "Two"]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 10))]
    text = " ".join(words)
    # punctuation and spacing that the PTB tokenizer and its punctuation filter deal with
    return rng.choice(["", "A ", "  "]) + text + rng.choice(["", ".", " .", "!", ", on the left.", "'s"])


def _coco_files(tmp_path, n_images=30, seed=0):
    rng = random.Random(seed)
    ids = rng.sample(range(1, 10_000), n_images)  # GT image order is not sorted on purpose
    images = [{"id": i, "file_name": f"{i}.png"} for i in ids]
    anns, k = [], 0
    for i in ids:
        for _ in range(rng.randint(1, 5)):
            k += 1
            anns.append({"image_id": i, "id": k, "caption": _sentence(rng)})
    rng.shuffle(anns)
    gt = {"info": {}, "licenses": [], "type": "captions", "images": images, "annotations": anns}
    preds = [{"image_id": i, "caption": _sentence(rng)} for i in ids]
    rng.shuffle(preds)
    gt_path, pred_path = tmp_path / "captions_test.json", tmp_path / "preds.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(preds))
    return gt_path, pred_path


class _NoSpice:
    """Stands in for SPICE inside COCOEvalCap only (its jars cannot be downloaded here); scored as 0."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


@pytest.mark.slow  # two full evaluations with METEOR: ~10 s idle, ~25 s on a busy 2-core box
def test_caption_metrics_identical_to_cocoevalcap(tmp_path, monkeypatch):
    import pycocoevalcap.eval as coco_eval
    from pycocotools.coco import COCO

    gt_path, pred_path = _coco_files(tmp_path)
    out, per_image = tmp_path / "m.json", tmp_path / "per_image.json"
    ours = evaluate_caption_files(gt_path, pred_path, out, per_image_out=per_image)

    coco = COCO(str(gt_path))
    coco_res = coco.loadRes(str(pred_path))
    monkeypatch.setattr(coco_eval, "Spice", _NoSpice)
    official = coco_eval.COCOEvalCap(coco, coco_res)
    official.evaluate()

    expected = {k: v for k, v in official.eval.items() if k != "SPICE"}
    assert ours.scores == expected  # exact equality, same key names
    written = json.loads(out.read_text())
    assert {k: written[k] for k in expected} == expected
    assert written["CIDEr"] > 0 and 0 < written["Bleu_1"] <= 1
    per_img = json.loads(per_image.read_text())
    assert {int(k): v["CIDEr"] for k, v in per_img.items()} == {
        i: e["CIDEr"] for i, e in official.imgToEval.items()
    }
    assert {int(k): v["METEOR"] for k, v in per_img.items()} == {
        i: e["METEOR"] for i, e in official.imgToEval.items()
    }
    # validation CIDEr in training is this same scorer, alone
    refs = load_caption_references(gt_path)
    preds = {p["image_id"]: p["caption"] for p in json.loads(pred_path.read_text())}
    assert cider_score(refs, preds) == official.eval["CIDEr"]
    # METEOR switched off: null in the file, every other score as before
    quick = evaluate_caption_files(gt_path, pred_path, spice="off", meteor="off")
    assert quick.to_json()["METEOR"] is None and "METEOR" not in quick.per_image[next(iter(refs))]
    assert {k: v for k, v in quick.to_json().items() if k not in ("METEOR", "SPICE", "SPICE_note")} == {
        k: v for k, v in expected.items() if k != "METEOR"
    }
    ok, note = spice_available()
    if ok:  # pragma: no cover - the CoreNLP jars are not installable offline
        assert isinstance(written["SPICE"], float)
    else:
        assert written["SPICE"] is None and "stanford-corenlp-3.6.0" in written["SPICE_note"] == note


def test_reference_loading_keeps_gt_order_and_all_captions(tmp_path):
    gt_path, _ = _coco_files(tmp_path, n_images=8, seed=3)
    gt = json.loads(gt_path.read_text())
    refs = load_caption_references(gt_path)
    assert list(refs) == [img["id"] for img in gt["images"]]
    assert sum(len(v) for v in refs.values()) == len(gt["annotations"])
    for ann in gt["annotations"]:
        assert ann["caption"] in refs[ann["image_id"]]


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"image_id": 1, "caption": "x"}, "expected a list"),
        (["x"], "entry 0 is not an object"),
        ([{"caption": "x"}], "'image_id' must be an integer"),
        ([{"image_id": 1}], "has no 'caption'"),
        ([{"image_id": 1, "caption": None}], "caption is null"),
        ([{"image_id": 1, "caption": ["x"]}], "caption must be a string, got list"),
        ([{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"}], "more than one caption"),
        ([{"image_id": i, "caption": "x"} for i in (1, 2, 7)], "not in the ground truth, e.g. 7"),
        ([{"image_id": 2, "caption": "x"}], "no caption for 1 of 2 images, e.g. image_id 1"),
    ],
)
def test_bad_caption_predictions_are_one_line_data_errors(results, message):
    refs = {1: ["a cat"], 2: ["a dog"]}
    with pytest.raises(DataError, match=re.escape(message)) as exc:
        check_caption_inputs(list(refs), refs, results, source="preds.json")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("preds.json")


def test_ground_truth_image_without_captions_is_a_data_error(tmp_path):
    gt = {"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1, "id": 1, "caption": "a cat"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(
        DataError, match=r"gt\.json: 1 image\(s\) without reference captions, e\.g\. image id 2"
    ):
        load_caption_references(path)


@pytest.mark.parametrize("scorer", [score_captions, cider_score])
def test_missing_java_is_one_error_class_with_one_line(scorer, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH without java
    with pytest.raises(MissingProgramError, match=r"^java not found on PATH \(needed by ") as exc:
        scorer({1: ["a cat"]}, {1: "a cat"})
    assert "\n" not in str(exc.value)
