"""COCO caption metrics through pycocoevalcap's own tokenizer and scorers, called one by one.

We never call ``COCOEvalCap.evaluate()``: it hard-codes SPICE, which needs Stanford CoreNLP 3.6.0 jars that
pycocoevalcap downloads on first use (no network here). Instead we do what it does -- PTB-tokenize ground
truth and predictions, then Bleu(4), Meteor, Rouge, Cider on the same dicts -- so the values are the ones
pycocoevalcap gives. SPICE runs only when its jars are already in place; otherwise it is reported as
unavailable. Each scorer (and so each JVM: METEOR costs ~4.5 s to start) runs once per evaluation.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlpeft.errors import DataError, MissingProgramError

METRIC_KEYS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SPICE_JARS: tuple[str, ...] = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


@dataclass
class CaptionMetrics:
    """Corpus scores under pycocoevalcap's key names, SPICE (or None + a note), per-image CIDEr."""

    scores: dict[str, float]
    spice: float | None
    spice_note: str | None
    per_image: dict[int, dict[str, float]] = field(repr=False)  # image id -> {"CIDEr": ..., "METEOR": ...}

    def to_json(self) -> dict[str, Any]:
        """The metrics file content (``METEOR`` null when it was switched off)."""
        out: dict[str, Any] = {key: self.scores.get(key) for key in METRIC_KEYS}
        out["SPICE"] = self.spice
        if self.spice_note:
            out["SPICE_note"] = self.spice_note
        return out


def spice_jar_dir() -> Path:
    """Where pycocoevalcap's SPICE looks for the Stanford CoreNLP jars."""
    import pycocoevalcap.spice as spice_pkg

    return Path(spice_pkg.__file__).parent / "lib"


def spice_available() -> tuple[bool, str | None]:
    """Whether SPICE can run without a download; if not, why (one line)."""
    lib = spice_jar_dir()
    missing = [j for j in SPICE_JARS if not (lib / j).is_file()]
    if missing:
        return False, f"SPICE unavailable: {', '.join(missing)} not found in {lib} (not downloaded: offline)"
    return True, None


def check_caption_inputs(
    images: Sequence[int], references: Mapping[int, Sequence[str]], results: Any, source: str = "predictions"
) -> dict[int, str]:
    """Validate a COCO results list (``[{image_id, caption}]``): exactly one string caption per GT image.

    ``images`` are the ground-truth image ids (COCOEvalCap scores every one of them); returns id -> caption.
    """
    if not isinstance(results, list):
        raise DataError(
            f"{source}: expected a list of {{image_id, caption}} objects, got {type(results).__name__}"
        )
    known = set(images)
    preds: dict[int, str] = {}
    unknown: list[int] = []
    for i, entry in enumerate(results):
        if not isinstance(entry, Mapping):
            raise DataError(f"{source}: entry {i} is not an object")
        img = entry.get("image_id")
        if isinstance(img, bool) or not isinstance(img, int):
            raise DataError(f"{source}: entry {i}: 'image_id' must be an integer, got {img!r}")
        if "caption" not in entry:
            raise DataError(f"{source}: entry {i} (image_id {img}) has no 'caption'")
        cap = entry["caption"]
        if not isinstance(cap, str):
            problem = "is null" if cap is None else f"must be a string, got {type(cap).__name__}"
            raise DataError(f"{source}: entry {i} (image_id {img}): caption {problem}")
        if img in preds:
            raise DataError(f"{source}: image_id {img} has more than one caption")
        if img not in known:
            unknown.append(img)
        preds[img] = cap
    if unknown:
        raise DataError(f"{source}: {len(unknown)} image id(s) not in the ground truth, e.g. {unknown[0]}")
    absent = [i for i in images if i not in preds]
    if absent:
        raise DataError(
            f"{source}: no caption for {len(absent)} of {len(known)} images, e.g. image_id {absent[0]}"
        )
    for img in images:
        if not references.get(img):
            raise DataError(f"ground truth: image_id {img} has no reference captions")
    return preds


def require_java(needed_by: str, alternative: str = "") -> None:
    """A one-line :class:`MissingProgramError` if ``java`` is not on PATH, naming who needs it."""
    if shutil.which("java") is None:
        raise MissingProgramError(
            f"java not found on PATH (needed by {needed_by}): install a Java runtime{alternative}"
        )


def _tokenize(
    ids: list[int], references: Mapping[int, Sequence[str]], predictions: Mapping[int, str]
) -> tuple[dict, dict]:
    """pycocoevalcap's PTB tokenization of references and predictions, as COCOEvalCap does it (Java)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
    res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in ids})
    return gts, res


def score_captions(
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    spice: Literal["auto", "off"] = "auto",
    meteor: Literal["on", "off"] = "on",
) -> CaptionMetrics:
    """Corpus caption metrics of ``predictions`` (image id -> caption) against ``references``.

    Image order is that of ``references`` (COCOEvalCap uses the ground-truth image order). Needs Java.
    ``meteor="off"`` leaves METEOR out (its JVM and paraphrase tables cost ~5 s per evaluation).
    """
    require_java("the caption metrics: PTBTokenizer, METEOR")
    # pycocoevalcap prints progress to stdout (Bleu's n-gram counts...); keep stdout for our own output.
    with contextlib.redirect_stdout(io.StringIO()):
        return _score(list(references), references, predictions, spice, meteor == "on")


def cider_score(
    references: Mapping[int, Sequence[str]], predictions: Mapping[int, str], alternative: str = ""
) -> float:
    """Corpus CIDEr alone (e.g. at every validation): the tokenizer and scorer of :func:`score_captions`.

    The same value as ``score_captions(...).scores["CIDEr"]``, without METEOR's JVM start-up. Needs Java;
    ``alternative`` is appended to the error line when it is missing (e.g. how to do without).
    """
    from pycocoevalcap.cider.cider import Cider

    require_java("CIDEr: PTBTokenizer", alternative)
    with contextlib.redirect_stdout(io.StringIO()):
        gts, res = _tokenize(list(references), references, predictions)
        score, _ = Cider().compute_score(gts, res)
    return float(score)


def _score(
    ids: list[int],
    references: Mapping[int, Sequence[str]],
    predictions: Mapping[int, str],
    spice: str,
    with_meteor: bool,
) -> CaptionMetrics:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _tokenize(ids, references, predictions)

    scores: dict[str, float] = {}
    per_image: dict[int, dict[str, float]] = {i: {} for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res)
    scores.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if with_meteor:
        meteor = Meteor()
        try:
            meteor_score, meteor_imgs = meteor.compute_score(gts, res)
        finally:
            del meteor  # kills the JVM now rather than at interpreter exit
        scores["METEOR"] = float(meteor_score)
        for i, m in zip(ids, meteor_imgs, strict=True):
            per_image[i]["METEOR"] = float(m)
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    cider, cider_imgs = Cider().compute_score(gts, res)
    scores["CIDEr"] = float(cider)
    for i, c in zip(ids, cider_imgs, strict=True):
        per_image[i]["CIDEr"] = float(c)

    spice_value, note = _spice(gts, res, spice)
    return CaptionMetrics(scores=scores, spice=spice_value, spice_note=note, per_image=per_image)


def _spice(gts: dict, res: dict, mode: str) -> tuple[float | None, str | None]:
    if mode == "off":
        return None, "SPICE disabled (evaluate.spice = off)"
    ok, why = spice_available()
    if not ok:
        return None, why
    from pycocoevalcap.spice.spice import Spice

    score, _ = Spice().compute_score(gts, res)
    return float(score), None
