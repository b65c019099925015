"""Official VQA accuracy: our fast implementation vs line-by-line transcriptions of the official vqaEval.py.

Two references, one per revision: ``vqa_official_master_ref.py`` (master, a013f00) and
``vqa_official_legacy_ref.py`` (458a8b2, before a013f00), both run on ``vqa_official_api.py`` (vqa.py).
"""

from __future__ import annotations

import copy
import re
from typing import get_args

import pytest
from vqa_cases import ATOMS, make_vqa
from vqa_official_api import run_official
from vqa_official_legacy_ref import OfficialVQAEvalLegacy
from vqa_official_master_ref import OfficialVQAEvalMaster

from vlpeft.errors import ConfigError, DataError
from vlpeft.eval import REVISIONS, VqaGroundTruth, answer_accuracy, check_vqa_predictions, evaluate_vqa
from vlpeft.eval.vqa_normalize import (
    _PERIOD,
    CONTRACTIONS,
    DEFAULT_REVISION,
    NUMBER_WORDS,
    PUNCTUATION,
    VqaRevisionName,
    clean_answer,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    vqa_revision,
)

REFERENCES = {"master": OfficialVQAEvalMaster, "legacy": OfficialVQAEvalLegacy}


class _NoVQA:
    def getQuesIds(self):
        return []


@pytest.fixture(scope="module", params=list(REFERENCES))
def ref(request):
    """Each revision's official class, for its normalization methods (identical in both revisions)."""
    return REFERENCES[request.param](_NoVQA(), None)


def _ref_full(ref, s: str) -> str:
    s = s.replace("\n", " ").replace("\t", " ").strip()
    return ref.processDigitArticle(ref.processPunctuation(s))


def test_every_revision_has_a_reference_and_a_config_name():
    assert set(REVISIONS) == set(REFERENCES)
    assert set(get_args(VqaRevisionName)) == set(REVISIONS)  # the typed evaluate.vqa_revision key
    assert REVISIONS[DEFAULT_REVISION].name == "master"


def test_tables_match_official(ref):
    assert ref.contractions == CONTRACTIONS
    assert ref.manualMap == NUMBER_WORDS
    assert list(PUNCTUATION) == ref.punct
    assert {"'", ":", "."}.isdisjoint(PUNCTUATION)  # both revisions keep apostrophes and colons


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
def test_normalize_answer_hand_cases(ref, raw, expected):
    assert normalize_answer(raw) == expected
    assert _ref_full(ref, raw) == expected


def test_normalization_matches_official_on_atoms_and_combinations(ref):
    texts = [
        *ATOMS,
        *(f"{a} {b}" for a in ATOMS for b in ATOMS[::7]),
        *(f"{a},{b}" for a in ATOMS[::3] for b in ATOMS),
    ]
    for t in texts:
        assert process_punctuation(t) == ref.processPunctuation(t), t
        assert process_digit_article(t) == ref.processDigitArticle(t), t
        assert normalize_answer(t) == _ref_full(ref, t), t
        assert clean_answer(t) == t.replace("\n", " ").replace("\t", " ").strip(), t


def test_period_regex_is_the_official_one_simplified():
    official = re.compile("(?!<=\\d)(\\.)(?!\\d)")
    for t in ["a.b", "1.5", ".<=5", "x.<=1", "<=1.", "...", "a.1.b.", "5.", ".5", "." * 40]:
        assert official.sub("", t, count=32) == _PERIOD.sub("", t, count=32)


def test_master_rule_cleans_then_normalizes_everything_only_when_answers_disagree():
    master = vqa_revision("master").rule
    rule = master(["yes!"] * 10)  # unanimous: nothing normalized, prediction only cleaned
    assert rule.answers == ("yes!",) * 10 and rule.prediction(" Yes!\n") == "Yes!"
    rule = master([" yes", "yes\n", "\tyes"])  # identical once cleaned: unanimous too
    assert rule.answers == ("yes",) * 3 and rule.prediction("Yes") == "Yes"
    rule = master(["Two!", "2"])  # disagree: answers and prediction fully normalized
    assert rule.answers == ("2", "2") and rule.prediction("the Two.") == "2"


def test_legacy_rule_punctuation_only_on_raw_disagreeing_answers():
    legacy = vqa_revision("legacy").rule
    rule = legacy(["yes!"] * 10)  # unanimous: untouched; the prediction is always fully normalized
    assert rule.answers == ("yes!",) * 10 and rule.prediction(" Yes!\n") == "yes"
    rule = legacy(["yes!", "yes"])  # '!' becomes a space, never stripped
    assert rule.answers == ("yes ", "yes")
    assert legacy(["Two", "2"]).answers == ("Two", "2")  # never lower-cased nor digit-mapped
    assert legacy([" yes", "yes\n"]).answers == (" yes", "yes\n")  # never cleaned


def test_unknown_revision_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"revision 'head' is unknown; choose one of master, legacy"):
        VqaGroundTruth.from_annotations([_question(1, ["2"])], revision="head")


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
    q = {
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "test", "license": {},
        "questions": [{"question_id": a["question_id"], "image_id": 1} for a in anns],
    }  # fmt: skip
    return q, {"annotations": anns}, [{"question_id": qid, "answer": p} for qid, p in preds.items()]


# (ground-truth answers, prediction, accuracy in percent on master, on legacy), computed by hand.
ACC_CASES = [
    (["2"] * 10, "2", 100.0, 100.0),
    (["2"] * 10, "two", 0.0, 100.0),  # master: unanimous, so the prediction is not digit-mapped
    (["two"] * 10, "two", 100.0, 0.0),  # legacy: the prediction is mapped, the ground truth never
    (["2"] * 3 + ["3"] * 7, "2", 90.0, 90.0),  # 3 matches: 3 subsets see 2 (2/3), 7 see 3 (1) -> 0.9
    (["2"] * 2 + ["3"] * 8, "2", 60.0, 60.0),  # 2 matches: 2 x 1/3 + 8 x 2/3 -> 0.6
    (["2"] + ["3"] * 9, "2", 30.0, 30.0),  # 1 match: 1 x 0 + 9 x 1/3 -> 0.3
    (["2"] * 4 + ["3"] * 6, "2", 100.0, 100.0),
    (["frisbee"] * 10, "Frisbee!", 0.0, 100.0),  # master: nothing normalized for a unanimous question
    (["t-shirt"] * 10, "t-shirt", 100.0, 0.0),  # legacy: prediction "t shirt" vs raw "t-shirt"
    (["yes!"] * 10, "yes!", 100.0, 0.0),
    (["yes!"] * 9 + ["yes"], "yes", 100.0, 30.0),  # legacy GT: "yes!" -> "yes " (no strip), one match
    (["yes."] * 9 + ["yes"], "yes", 100.0, 100.0),  # GT periods are deleted, so all ten match
    (["Yes"] * 10, "Yes", 100.0, 0.0),
    (["Two"] * 9 + ["2"], "2", 100.0, 30.0),  # master digit-maps disagreeing GT; legacy never does
    ([" yes"] * 5 + ["yes\n"] * 5, "yes", 100.0, 0.0),  # master cleans GT (then unanimous); legacy never
    ([" yes"] * 5 + ["yes\n"] * 5, "Yes", 0.0, 0.0),  # master: unanimous once cleaned, "Yes" stays "Yes"
    (["dont"] * 10, "dont", 100.0, 0.0),  # legacy expands the prediction's contraction only
    (["dont"] * 5 + ["don't"] * 5, "dont", 100.0, 100.0),
    (["the red car"] * 10, "the red car", 100.0, 0.0),
    (["1,000"] * 5 + ["1000"] * 5, "1,000", 100.0, 100.0),
    (["red car"] * 2 + ["car"] * 8, "the red car", 60.0, 60.0),
]


@pytest.mark.parametrize("revision", ["master", "legacy"])
@pytest.mark.parametrize(("answers", "pred", "on_master", "on_legacy"), ACC_CASES)
def test_hand_computed_accuracy(revision, answers, pred, on_master, on_legacy):
    expected = {"master": on_master, "legacy": on_legacy}[revision]
    anns = [_question(1, answers)]
    q, a, res = _files(anns, {1: pred})
    ours = evaluate_vqa(a["annotations"], res, revision=revision)
    assert ours.overall == expected and ours.revision == revision
    assert run_official(REFERENCES[revision], q, a, res).accuracy["overall"] == expected


@pytest.mark.parametrize(
    ("answers", "pred", "revision", "expected"),
    [
        # Without answer ids, equal answers give equal dicts; `item != gtAnsDatum` drops all of them.
        (["2"] * 3 + ["3"] * 7, "2", "master", 70.0),  # 3 subsets see 0 matches, 7 see 3
        (["2"] * 3 + ["3"] * 7, "2", "legacy", 70.0),
        # master normalizes the dicts in place first: ten equal dicts leave nothing to match
        (["Yes"] * 5 + ["yes"] * 5, "yes", "master", 0.0),
        (["Yes"] * 5 + ["yes"] * 5, "yes", "legacy", 50.0),  # "Yes" subsets see five "yes", the others none
    ],
)
def test_identical_answer_dicts_leave_together(answers, pred, revision, expected):
    anns = [_question(1, answers, with_ids=False)]
    q, a, res = _files(anns, {1: pred})
    assert evaluate_vqa(a["annotations"], res, revision=revision).overall == expected
    assert run_official(REFERENCES[revision], q, a, res).accuracy["overall"] == expected


def test_per_type_averages_leave_one_out_not_last_subset():
    # Before f8b1ce3 (2015) the per-type lists got the last subset's value; both revisions append the mean.
    anns = [_question(1, ["3"] * 9 + ["2"], qtype="how many", atype="number")]
    _, a, res = _files(anns, {1: "2"})
    m = evaluate_vqa(a["annotations"], res)
    assert m.to_json() == {
        "overall": 30.0,
        "perAnswerType": {"number": 30.0},
        "perQuestionType": {"how many": 30.0},
        "revision": "master",
    }
    assert m.per_question_json() == {"1": 30.0}


def _accuracy_dict(metrics) -> dict:
    return {k: v for k, v in metrics.to_json().items() if k != "revision"}


@pytest.mark.parametrize("revision", ["master", "legacy"])
@pytest.mark.parametrize("dup", [0.0, 0.3])
def test_randomized_records_identical_to_official(revision, dup):
    qfile, afile, results = make_vqa(3000, seed=int(dup * 10) + 1, duplicate_dicts=dup)
    official = run_official(REFERENCES[revision], qfile, afile, results)
    ours = evaluate_vqa(afile["annotations"], results, revision=revision)
    assert _accuracy_dict(ours) == official.accuracy
    assert ours.per_question_json() == {str(k): v for k, v in official.evalQA.items()}
    assert list(ours.per_answer_type) == list(official.accuracy["perAnswerType"])  # same key order
    assert list(ours.per_question_type) == list(official.accuracy["perQuestionType"])


def test_randomized_cases_separate_the_revisions():
    """The generated cases hit the branches where master and legacy differ, in both directions."""
    qfile, afile, results = make_vqa(3000, seed=5)
    master = run_official(OfficialVQAEvalMaster, qfile, afile, results).evalQA
    legacy = run_official(OfficialVQAEvalLegacy, qfile, afile, results).evalQA
    higher_on_master = sum(master[q] > legacy[q] for q in master)
    lower_on_master = sum(master[q] < legacy[q] for q in master)
    assert higher_on_master > 100 and lower_on_master > 100, (higher_on_master, lower_on_master)
    ours = {
        r: evaluate_vqa(afile["annotations"], results, revision=r).per_question_json() for r in REFERENCES
    }
    assert ours["master"] == {str(k): v for k, v in master.items()}
    assert ours["legacy"] == {str(k): v for k, v in legacy.items()}


def test_answer_accuracy_is_the_leave_one_out_rule():
    # 3 of 10 match: the 3 subsets without a match-giver keep 2 (2/3), the other 7 keep 3 (1): (2 + 7) / 10
    assert answer_accuracy(["a"] * 3 + ["b"] * 7, "a") == 0.9
    assert [answer_accuracy(["a"] * m + ["b"] * (10 - m), "a") for m in range(6)] == [
        0.0, 0.3, 0.6, 0.9, 1.0, 1.0,
    ]  # fmt: skip
    assert answer_accuracy(["a"], "a") == 0.0  # one annotator: the only subset is empty


@pytest.mark.parametrize("revision", ["master", "legacy"])
def test_ground_truth_reusable_and_from_records_equivalent(revision):
    _, afile, results = make_vqa(500, seed=7)
    gt = VqaGroundTruth.from_annotations(copy.deepcopy(afile["annotations"]), revision=revision)
    preds = check_vqa_predictions(results, gt)
    first = gt.score(preds)
    assert gt.score(preds).to_json() == first.to_json()  # no in-place mutation as in the official code

    class Rec:
        def __init__(self, ann):
            self.question_id = ann["question_id"]
            self.answers = [d["answer"] for d in ann["answers"]]
            self.question_type = ann["question_type"]
            self.answer_type = ann["answer_type"]

    from_records = VqaGroundTruth.from_records([Rec(a) for a in afile["annotations"]], revision=revision)
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


def test_embedded_world_answers_score_the_same_under_both_revisions():
    """The embedded world's answers are already normalized, so its numbers do not depend on the revision."""
    import random

    from vlpeft.data.language import ANSWER_POOLS

    pool = sorted({a for answers in ANSWER_POOLS.values() for a in answers})
    assert all(normalize_answer(a) == a for a in pool)
    rng = random.Random(3)

    def answers(q: int) -> list[str]:  # a third unanimous, the rest from three candidates
        some = rng.sample(pool, 3)
        return [some[0]] * 10 if q % 3 == 0 else [rng.choice(some) for _ in range(10)]

    anns = [_question(q, answers(q)) for q in range(300)]
    results = [{"question_id": q, "answer": rng.choice(a["answers"])["answer"]} for q, a in enumerate(anns)]
    master, legacy = (evaluate_vqa(anns, results, revision=r) for r in ("master", "legacy"))
    assert 0 < master.overall < 100
    assert master.per_question_json() == legacy.per_question_json()
