"""Answer normalization of the official VQA evaluation (GT-Vision-Lab/VQA ``vqaEval.py``), both revisions.

The building blocks, each exactly as the official code has it:

- :func:`clean_answer`: newlines and tabs become spaces, then ``strip()``.
- :func:`process_punctuation`: each punctuation mark is deleted when it touches a space or when the text has
  a comma between two digits anywhere, and replaced by a space otherwise; the conditions are tested on the
  *input* text. Then every period not followed by a digit is deleted -- at most 32 of them, because the
  official call passes ``re.UNICODE`` (= 32) as the positional ``count`` argument of ``Pattern.sub``.
- :func:`process_digit_article`: lower-case, split on whitespace, map number words ("none" included) to
  digits, drop articles, expand contractions, join with single spaces.
- :func:`normalize_answer`: all three in that order (the "fully normalized" form).

When they are applied is what changed with commit a013f00 ("Fixed processing answers bug", 2021-03-11),
the last commit of ``vqaEval.py`` on master. :data:`REVISIONS` holds both rules, per question:

- ``master``: ground-truth answers and the prediction are cleaned; only when the cleaned ground-truth
  answers are not all identical are the answers *and* the prediction fully normalized; otherwise neither
  is (so ``Frisbee!`` scores 0 against ten ``frisbee``, and ``t-shirt`` 100 against ten ``t-shirt``).
- ``legacy`` (before a013f00): the prediction is always fully normalized; the raw ground-truth answers get
  :func:`process_punctuation` only (never cleaned, lower-cased nor digit-mapped), and only when they are
  not all identical.

Everything here is pure and memoized: answers repeat a lot, so 200k predictions cost a few thousand calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

from vlpeft.errors import ConfigError

# The official punctuation list on master (no apostrophe, no colon, no period: the period has its own rule).
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
_PUNCT_CHARS = frozenset(PUNCTUATION)

# Official: "(?!<=\d)(\.)(?!\d)". Its first group is a mistyped look-behind; as a look-ahead at a '.' it can
# never match "<=", so the pattern is "a period not followed by a digit".
_PERIOD = re.compile(r"\.(?!\d)")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)  # the official code passes re.UNICODE where sub() expects `count`

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# The official table, verbatim (master uses straight apostrophes). Keys with capitals can never match
# because words are lower-cased first; they are kept so the table stays comparable with the original.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

_CACHE_SIZE = 1 << 18


@lru_cache(maxsize=_CACHE_SIZE)
def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: marks removed or turned into spaces, periods stripped."""
    if _PUNCT_CHARS.isdisjoint(text):
        out = text  # fast path: nothing in the list to replace
    else:
        # Why the input text: the official code tests "p + ' ' in inText", not the partly cleaned text.
        delete_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
        out = text
        for p in PUNCTUATION:
            if p not in out:
                continue
            if delete_all or (p + " ") in text or (" " + p) in text:
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
    if "." in out:
        out = _PERIOD.sub("", out, count=_OFFICIAL_PERIOD_COUNT)
    return out


@lru_cache(maxsize=_CACHE_SIZE)
def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, no articles, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join([CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES])


@lru_cache(maxsize=_CACHE_SIZE)
def clean_answer(text: str) -> str:
    """Newlines and tabs to spaces, then ``strip()`` (what both revisions do to a prediction first)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_answer(text: str) -> str:
    """Fully normalized: :func:`clean_answer`, :func:`process_punctuation`, :func:`process_digit_article`.

    Master compares every answer of a question in this form when its ground-truth answers disagree; legacy
    compares every prediction in this form.
    """
    return process_digit_article(process_punctuation(clean_answer(text)))


VqaRevisionName = Literal["master", "legacy"]
DEFAULT_REVISION: VqaRevisionName = "master"


class QuestionRule(NamedTuple):
    """How one question is compared: its ground-truth answers as compared, and the prediction's normalizer."""

    answers: tuple[str, ...]
    prediction: Callable[[str], str]


@dataclass(frozen=True)
class VqaRevision:
    """One revision of the official ``vqaEval.py``: which normalization applies to which question."""

    name: VqaRevisionName
    source: str  # the official code this revision follows (for help texts and the README)
    rule: Callable[[Sequence[str]], QuestionRule]


# The official test is len(set(gtAnswers)) > 1; for a non-empty tuple that is "not all equal to the first",
# which tuple.count decides without building a set (this runs once per question).


def _master_rule(answers: Sequence[str]) -> QuestionRule:
    cleaned = tuple(map(clean_answer, answers))
    if cleaned and cleaned.count(cleaned[0]) != len(cleaned):
        # normalize_answer cleans again; cleaning is idempotent, so this is the official order exactly
        return QuestionRule(tuple(map(normalize_answer, cleaned)), normalize_answer)
    return QuestionRule(cleaned, clean_answer)


def _legacy_rule(answers: Sequence[str]) -> QuestionRule:
    raw = tuple(answers)
    if raw and raw.count(raw[0]) != len(raw):
        return QuestionRule(tuple(map(process_punctuation, raw)), normalize_answer)
    return QuestionRule(raw, normalize_answer)


REVISIONS: dict[str, VqaRevision] = {
    "master": VqaRevision(
        "master", "GT-Vision-Lab/VQA vqaEval.py master (a013f00, 2021-03-11)", _master_rule
    ),
    "legacy": VqaRevision("legacy", "GT-Vision-Lab/VQA vqaEval.py before a013f00 (458a8b2)", _legacy_rule),
}


def vqa_revision(name: str) -> VqaRevision:
    """The revision called ``name``; a one-line :class:`ConfigError` naming the choices otherwise."""
    try:
        return REVISIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"VQA evaluation revision {name!r} is unknown; choose one of {', '.join(REVISIONS)}"
        ) from None
