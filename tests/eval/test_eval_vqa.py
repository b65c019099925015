"""Official VQA accuracy: our fast implementation vs a transcription of the official vqaEval.py (master)."""

from __future__ import annotations

import copy
import re

import pytest
from vqa_cases import ATOMS, make_vqa
from vqa_official_ref import OfficialVQAEval, official_vqa_eval

from vlpeft.errors import DataError
from vlpeft.eval import VqaGroundTruth, check_vqa_predictions, evaluate_vqa
from vlpeft.eval.vqa_normalize import (
    _PERIOD,
    CONTRACTIONS,
    NUMBER_WORDS,
    PUNCTUATION,
    normalize_ground_truth,
    normalize_prediction,
    process_digit_article,
    process_punctuation,
)


class _NoVQA:
    def getQuesIds(self):
        return []


@pytest.fixture(scope="module")
def ref() -> OfficialVQAEval:
    return OfficialVQAEval(_NoVQA(), None)


def _ref_pred(ref: OfficialVQAEval, s: str) -> str:
    s = s.replace("\n", " ").replace("\t", " ").strip()
    return ref.processDigitArticle(ref.processPunctuation(s))


def test_tables_match_official(ref):
    assert ref.contractions == CONTRACTIONS
    assert ref.manualMap == NUMBER_WORDS
    assert list(PUNCTUATION) == ref.punct
    assert {"'", ":", "."}.isdisjoint(PUNCTUATION)  # master keeps apostrophes and colons


# (raw prediction, expected normalized form): one or more rows per rule, expectations computed by hand.
HAND_CASES = [
    ("yes", "yes"),
    ("Yes", "yes"),  # lower-cased
    ("yes.", "yes"),  # period not before a digit: deleted
    ("3.5", "3.5"),  # period before a digit: kept
    ("5.", "5"),
    ("..5", ".5"),
    ("U.S.", "us"),
    ("mr.smith", "mrsmith"),
    ("1,000", "1000"),  # comma between digits: punctuation deleted everywhere
    ("1,000 a-b (x)", "1000 ab x"),  # ... including marks that would otherwise become spaces
    ("red,white", "red white"),  # no space around ',' and no digit comma: replaced by a space
    ("red, white", "red white"),  # ', ' in text: deleted
    ("t-shirt", "t shirt"),
    ("a-b c", "b c"),  # '-' -> space, then the article "a" is dropped
    ("left/right", "left right"),
    ("bus?", "bus"),
    ("yes !", "yes"),  # ' !' in text: deleted
    ("12:30", "12:30"),  # colon is not in master's list
    ("Two", "2"),
    ("none", "0"),  # number-word map includes "none"
    ("ten dogs", "10 dogs"),
    ("the red car", "red car"),
    ("an apple", "apple"),
    ("dont", "don't"),
    ("couldn'tve", "couldn't've"),  # apostrophes survive punctuation, so apostrophe keys can match
    ("Im", "im"),  # capitalized keys can never match: words are lower-cased first
    ("whats", "what's"),
    ("  red   car \n", "red car"),
    ("red\tcar", "red car"),
    ("." * 40 + "x", "." * 8 + "x"),  # at most 32 periods deleted (re.UNICODE passed as count)
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), HAND_CASES)
def test_normalize_prediction_hand_cases(ref, raw, expected):
    assert normalize_prediction(raw) == expected
    assert _ref_pred(ref, raw) == expected


def test_normalization_matches_official_on_atoms_and_combinations(ref):
    texts = [
        *ATOMS,
        *(f"{a} {b}" for a in ATOMS for b in ATOMS[::7]),
        *(f"{a},{b}" for a in ATOMS[::3] for b in ATOMS),
    ]
    for t in texts:
        assert process_punctuation(t) == ref.processPunctuation(t), t
        assert process_digit_article(t) == ref.processDigitArticle(t), t
        assert normalize_prediction(t) == _ref_pred(ref, t), t


def test_period_regex_is_the_official_one_simplified():
    official = re.compile("(?!<=\\d)(\\.)(?!\\d)")
    for t in ["a.b", "1.5", ".<=5", "x.<=1", "<=1.", "...", "a.1.b.", "5.", ".5", "." * 40]:
        assert official.sub("", t, count=32) == _PERIOD.sub("", t, count=32)


def test_ground_truth_only_processed_when_answers_disagree():
    assert normalize_ground_truth(["yes!"] * 10) == ("yes!",) * 10  # unanimous: untouched
    assert normalize_ground_truth(["yes!", "yes"]) == ("yes ", "yes")  # '!' becomes a space, never stripped
    assert normalize_ground_truth(["Two", "2"]) == ("Two", "2")  # never lower-cased nor digit-mapped


def _question(qid, answers, qtype="how many", atype="number", with_ids=True):
    return {
        "question_id": qid,
        "image_id": 1,
        "question_type": qtype,
        "answer_type": atype,
        "answers": [
            {"answer": a, "answer_confidence": "yes"} | ({"answer_id": i + 1} if with_ids else {})
            for i, a in enumerate(answers)
        ],
    }


def _files(anns, preds):
    q = {"task_type": "Open-Ended", "questions": [{"question_id": a["question_id"]} for a in anns]}
    return q, {"annotations": anns}, [{"question_id": qid, "answer": p} for qid, p in preds.items()]


# (ground-truth answers, prediction, hand-computed accuracy in percent)
ACC_CASES = [
    (["2"] * 10, "2", 100.0),
    (["2"] * 10, "two", 100.0),  # prediction number word mapped
    (["two"] * 10, "two", 0.0),  # ... but ground truth never is
    (["2"] * 3 + ["3"] * 7, "2", 90.0),  # 3 matches: 3 subsets see 2 (2/3), 7 see 3 (1) -> 0.9
    (["2"] * 2 + ["3"] * 8, "2", 60.0),  # 2 matches: 2 x 1/3 + 8 x 2/3 -> 0.6
    (["2"] + ["3"] * 9, "2", 30.0),  # 1 match: 1 x 0 + 9 x 1/3 -> 0.3
    (["2"] * 4 + ["3"] * 6, "2", 100.0),
    (["yes!"] * 10, "yes!", 0.0),  # unanimous GT keeps '!', prediction loses it
    (["yes!"] * 9 + ["yes"], "yes", 30.0),  # GT processed: "yes!" -> "yes " (no strip), one match
    (["yes."] * 9 + ["yes"], "yes", 100.0),  # GT periods are deleted, so all ten match
    (["Yes"] * 10, "Yes", 0.0),  # GT never lower-cased
    (["1,000"] * 5 + ["1000"] * 5, "1,000", 100.0),
    (["red car"] * 2 + ["car"] * 8, "the red car", 60.0),
]


@pytest.mark.parametrize(("answers", "pred", "expected"), ACC_CASES)
def test_hand_computed_accuracy(answers, pred, expected):
    anns = [_question(1, answers)]
    q, a, res = _files(anns, {1: pred})
    ours = evaluate_vqa(a["annotations"], res)
    assert ours.overall == expected
    assert official_vqa_eval(q, a, res).accuracy["overall"] == expected


def test_identical_answer_dicts_leave_together():
    # Without answer ids, equal answers give equal dicts; the official `item != gtAnsDatum` drops all of them.
    anns = [_question(1, ["2"] * 3 + ["3"] * 7, with_ids=False)]
    q, a, res = _files(anns, {1: "2"})
    assert evaluate_vqa(a["annotations"], res).overall == 70.0  # 3 subsets see 0 matches, 7 see 3
    assert official_vqa_eval(q, a, res).accuracy["overall"] == 70.0


def test_per_type_averages_leave_one_out_not_last_subset():
    # An older revision appended the last subset's value to the per-type lists; master appends the mean.
    anns = [_question(1, ["3"] * 9 + ["2"], qtype="how many", atype="number")]
    _, a, res = _files(anns, {1: "2"})
    m = evaluate_vqa(a["annotations"], res)
    assert m.to_json() == {
        "overall": 30.0,
        "perAnswerType": {"number": 30.0},
        "perQuestionType": {"how many": 30.0},
    }
    assert m.per_question_json() == {"1": 30.0}


@pytest.mark.parametrize("dup", [0.0, 0.3])
def test_randomized_records_identical_to_official(dup):
    qfile, afile, results = make_vqa(3000, seed=int(dup * 10) + 1, duplicate_dicts=dup)
    official = official_vqa_eval(qfile, afile, results)
    ours = evaluate_vqa(afile["annotations"], results)
    assert ours.to_json() == official.accuracy
    assert ours.per_question_json() == {str(k): v for k, v in official.evalQA.items()}
    assert ours.per_question_json().keys() == {str(k) for k in official.evalQA}
    # exact floats too, not only after rounding
    assert list(ours.per_answer_type) == list(official.accuracy["perAnswerType"])  # same key order


def test_ground_truth_reusable_and_from_records_equivalent():
    _, afile, results = make_vqa(500, seed=7)
    gt = VqaGroundTruth.from_annotations(copy.deepcopy(afile["annotations"]))
    preds = check_vqa_predictions(results, gt)
    first = gt.score(preds)
    assert gt.score(preds).to_json() == first.to_json()  # no in-place mutation as in the official code

    class Rec:
        def __init__(self, ann):
            self.question_id = ann["question_id"]
            self.answers = [d["answer"] for d in ann["answers"]]
            self.question_type = ann["question_type"]
            self.answer_type = ann["answer_type"]

    from_records = VqaGroundTruth.from_records([Rec(a) for a in afile["annotations"]])
    assert from_records.score(preds).to_json() == first.to_json()


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"question_id": 1}, "expected a list"),
        ([1], "entry 0 is not an object"),
        ([{"answer": "x"}], "'question_id' must be an integer"),
        ([{"question_id": "1", "answer": "x"}], "'question_id' must be an integer"),
        ([{"question_id": 1}], "has no 'answer'"),
        ([{"question_id": 1, "answer": None}], "answer is null"),
        ([{"question_id": 1, "answer": 2}], "answer must be a string, got int"),
        ([{"question_id": 1, "answer": "x"}, {"question_id": 1, "answer": "y"}], "appears more than once"),
        ([{"question_id": q, "answer": "x"} for q in (1, 2, 9)], "not in annotations, e.g. 9"),
        ([{"question_id": 1, "answer": "x"}], "no prediction for 1 of 2 question ids"),
    ],
)  # fmt: skip
def test_bad_predictions_are_one_line_data_errors(results, message):
    gt = VqaGroundTruth.from_annotations([_question(1, ["2"]), _question(2, ["3"])])
    with pytest.raises(DataError, match=re.escape(message)) as exc:
        check_vqa_predictions(results, gt, source="predictions")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("predictions")


def _without(key):
    ann = _question(1, ["2"] * 10)
    del ann[key]
    return ann


def _bad_answer():
    ann = _question(1, ["2"] * 10)
    ann["answers"][3]["answer"] = None
    return ann


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("not a dict", "annotation 0 is not an object"),
        (_without("question_id"), "annotation 0: 'question_id' must be an integer, got None"),
        (_question(1, []), "question 1: 'answers' must be a non-empty list of objects"),
        (_bad_answer(), "question 1: every answer must have a string 'answer'"),
        (_without("answer_type"), "question 1: 'answer_type' must be a string, got None"),
    ],
)
def test_malformed_annotations_are_one_line_data_errors(record, message):
    with pytest.raises(DataError, match=re.escape(f"a.json: {message}")):
        VqaGroundTruth.from_annotations([record], source="a.json")


def test_duplicate_annotation_ids_are_rejected():
    with pytest.raises(DataError, match="question_id 1 appears more than once"):
        VqaGroundTruth.from_annotations([_question(1, ["2"]), _question(1, ["3"])])
