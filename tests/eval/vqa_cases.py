"""Synthetic VQA ground truth and predictions that exercise every normalization rule (tests and bench)."""

from __future__ import annotations

import random

# Answer atoms chosen to hit each rule: punctuation (deleted vs spaced), comma between digits, periods before
# digits or not, number words (incl. "none"), articles, contractions, capitals, apostrophes, multi-space.
ATOMS = [
    "yes", "no", "Yes", "2", "two", "Two", "none", "0", "10", "ten", "1,000", "1000", "3.5", "3,5", "red",
    "red car", "the red car", "a dog", "an apple", "dog", "dogs", "dont", "don't", "cant", "can't",
    "couldn'tve", "couldn't've", "yes.", "yes!", "yes !", "U.S.", "us", "mr.smith", "t-shirt", "t shirt",
    "tshirt", "left/right", "left right", "(bus)", "bus", "bus?", "red, white", "red white", "red,white",
    "50 mph", "50mph", "12:30", "1:30 pm", "its", "it's", "whats", "what's", "o'clock", "oclock", "none ",
    " yes", "n/a", "black & white", "black and white", "@home", "<3", "a", "the", "x.", "5.", ".5", "$5.00",
    "Im", "I'm", "wheres", "where's", "ow's'at", "'ows'at", "i dont know", "red-white-blue", "2 , 3",
    "frisbee", "Frisbee!", "T-Shirt", "Two dogs", "youre", "None",
]  # fmt: skip
QUESTION_TYPES = ["what color is the", "how many", "is this", "what is the", "none of the above", "why"]
ANSWER_TYPES = ["yes/no", "number", "other"]


def _perturb(rng: random.Random, text: str) -> str:
    """A prediction derived from a ground-truth answer by the kinds of edits normalization undoes (or not)."""
    edits = [
        lambda t: t.upper(),
        lambda t: t.capitalize(),
        lambda t: t + ".",
        lambda t: t + "!",
        lambda t: "the " + t,
        lambda t: "a " + t,
        lambda t: "  " + t.replace(" ", "   ") + " \n",
        lambda t: t.replace(" ", "\t"),
        lambda t: t.replace("2", "two").replace("10", "ten"),
        lambda t: t.replace("'", ""),
        lambda t: t + "?",
        lambda t: "(" + t + ")",
        lambda t: t.replace(" ", "-"),
        lambda t: t + " " + rng.choice(ATOMS),
    ]
    for _ in range(rng.randint(0, 2)):
        text = rng.choice(edits)(text)
    return text


def _decorate(rng: random.Random, text: str) -> str:
    """Whitespace that cleaning removes (master cleans ground truth; legacy does not)."""
    return rng.choice(["", " ", "\n", "\t", "  "]) + text + rng.choice(["", " ", "\n", "\t", " \n"])


def _ground_truth(rng: random.Random) -> list[str]:
    """Ten answers from one of the cases where the revisions differ (or agree), in stated proportions.

    - 30 % unanimous as written (neither revision normalizes the ground truth; master leaves the prediction
      raw too, legacy normalizes it),
    - 10 % identical after cleaning but not as written (master: unanimous; legacy: disagreeing),
    - 15 % variants of one atom by case and punctuation ("Frisbee!", "frisbee", ...),
    - 45 % drawn from a small pool of atoms (disagreeing, usually).
    """
    r = rng.random()
    pool = rng.sample(ATOMS, rng.randint(1, 4))
    if r < 0.3:
        return [pool[0]] * 10
    if r < 0.4:
        return [_decorate(rng, pool[0].strip()) for _ in range(10)]
    if r < 0.55:
        variants = [
            pool[0],
            pool[0].upper(),
            pool[0].capitalize(),
            pool[0] + "!",
            pool[0] + ".",
            "the " + pool[0],
        ]
        return [rng.choice(variants[: rng.randint(1, len(variants))]) for _ in range(10)]
    return [rng.choice(pool) for _ in range(10)]


def make_vqa(n_questions: int, seed: int = 0, duplicate_dicts: float = 0.0) -> tuple[dict, dict, list[dict]]:
    """(questions file, annotations file, results list) with ``n_questions`` questions.

    ``duplicate_dicts`` is the share of questions whose answer dicts carry no ``answer_id`` (so equal answers
    give equal dicts: the official ``item != gtAnsDatum`` quirk).
    """
    rng = random.Random(seed)
    questions, annotations, results = [], [], []
    for k in range(n_questions):
        qid = 1000 + 7 * k
        image_id = 10 + k // 3
        answers = _ground_truth(rng)
        no_ids = rng.random() < duplicate_dicts
        ans_dicts = [
            {"answer": a, "answer_confidence": rng.choice(["yes", "maybe"]) if not no_ids else "yes"}
            | ({} if no_ids else {"answer_id": j + 1})
            for j, a in enumerate(answers)
        ]
        annotations.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": rng.choice(QUESTION_TYPES),
                "answer_type": rng.choice(ANSWER_TYPES),
                "multiple_choice_answer": answers[0],
                "answers": ans_dicts,
            }
        )
        questions.append({"question_id": qid, "image_id": image_id, "question": f"question {k}?"})
        r = rng.random()
        if r < 0.7:
            pred = _perturb(rng, rng.choice(answers))
        elif r < 0.9:
            pred = _perturb(rng, rng.choice(ATOMS))
        else:
            pred = "".join(rng.choice("abc ,.-!?'0123456789") for _ in range(rng.randint(0, 12)))
        results.append({"question_id": qid, "answer": pred})
    rng.shuffle(results)  # the official code does not care about result order; neither may we
    qfile = {
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "test",
        "license": {}, "questions": questions,
    }  # fmt: skip
    afile = {
        "info": {},
        "data_type": "mscoco",
        "data_subtype": "test",
        "license": {},
        "annotations": annotations,
    }
    return qfile, afile, results
