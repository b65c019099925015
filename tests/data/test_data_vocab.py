"""Answer vocabulary and the official VQA soft-score rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vlpeft.data.vocab import AnswerVocab
from vlpeft.data.vqa import load_vqa
from vlpeft.errors import DataError
from vlpeft.eval import answer_accuracy, normalize_answer


def _official(answer: str, gts: list[str]) -> float:
    """The rule as written in the VQA evaluation script: loop over leave-one-out subsets."""
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(g == answer for g in others) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize(
    ("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]
)
def test_soft_score_hand_computed(matches, expected):
    # e.g. 3 matches: the 3 subsets without a match-giver have 2 -> 2/3; the other 7 have 3 -> 1; (2 + 7) / 10
    answers = ["red"] * matches + ["blue"] * (10 - matches)
    assert AnswerVocab(["red"]).target_vector(answers).item() == pytest.approx(expected)
    assert answer_accuracy(answers, "red") == pytest.approx(expected)


def test_soft_scores_match_the_leave_one_out_loop():
    vocab = AnswerVocab(["yes", "no", "2"])
    rng = np.random.default_rng(0)
    pool = np.array(["yes", "no", "2", "blue"])
    for _ in range(400):
        gts = [str(a) for a in rng.choice(pool, size=10, p=rng.dirichlet(np.ones(4)))]
        scores = vocab.soft_scores(gts)
        for ans in set(gts):
            assert scores[ans] == pytest.approx(_official(ans, gts))
        target = vocab.target_vector(gts)
        for ans, i in (("yes", 0), ("no", 1), ("2", 2)):
            assert target[i].item() == pytest.approx(_official(ans, gts))


def test_target_vector_hand_case():
    vocab = AnswerVocab(["red", "blue", "green"])
    t = vocab.target_vector(["red"] * 8 + ["blue", "purple"])
    assert t.dtype == torch.float32 and t.shape == (3,)
    assert t.tolist() == pytest.approx([1.0, 0.3, 0.0])


def test_vocabulary_always_normalizes_with_the_evaluators_function():
    # The evaluator's normalize_answer is checked against the official code in tests/eval; here: that the
    # vocabulary uses it for every answer (the cases are ones the old private copy got wrong or right).
    recs = [SimpleNamespace(multiple_choice_answer=a) for a in [" Two ", "the red one", "dont", "A", "yes!"]]
    assert AnswerVocab.build(recs, top_k=None).answers == ["", "2", "don't", "red 1", "yes"]
    assert normalize_answer("dont") == "don't"  # the official contraction table applies
    assert normalize_answer("A") == ""  # an answer that is only an article empties, as officially
    vocab = AnswerVocab(["2"])
    assert vocab.index("two") == 0 and "Two" in vocab and "three" not in vocab
    assert vocab.soft_scores(["two", "2", "2"] + ["x"] * 7)["2"] == pytest.approx(0.9)


def test_build_min_count_top_k_and_ties():
    recs = [
        SimpleNamespace(multiple_choice_answer=a) for a in ["yes"] * 5 + ["no"] * 3 + ["c", "b", "b", "d"]
    ]  # not "a": an article normalizes to ""
    assert AnswerVocab.build(recs, min_count=1, top_k=None).answers == ["yes", "no", "b", "c", "d"]
    assert AnswerVocab.build(recs, min_count=2, top_k=None).answers == ["yes", "no", "b"]
    assert AnswerVocab.build(recs, min_count=1, top_k=3).answers == ["yes", "no", "b"]
    with pytest.raises(DataError, match="at least 9 times"):
        AnswerVocab.build(recs, min_count=9)
    with pytest.raises(DataError, match="zero VQA records"):
        AnswerVocab.build([])


def test_vocab_from_tiny_world_round_trips(tiny_world, tmp_path):
    recs = load_vqa(tiny_world, "train")
    vocab = AnswerVocab.build(recs, min_count=1, top_k=3129)
    assert 5 <= len(vocab) <= 19 and vocab.answers[0] in {r.multiple_choice_answer for r in recs}
    vocab.save(tmp_path / "vocab.json")
    again = AnswerVocab.load(tmp_path / "vocab.json")
    assert again.answers == vocab.answers and again.meta["top_k"] == 3129
    (tmp_path / "bad.json").write_text('{"answers": []}')
    with pytest.raises(DataError, match=r"bad.json: field 'answers' must be a non-empty list"):
        AnswerVocab.load(tmp_path / "bad.json")
