"""Evaluation: official VQA accuracy and COCO caption metrics (pure functions plus file-level wrappers).

Public API:

- :class:`VqaGroundTruth` (``from_annotations`` / ``from_records``, then ``.score(preds) -> VqaMetrics``),
  :func:`evaluate_vqa` (annotation records + results list -> metrics), :func:`check_vqa_predictions`;
  ``revision="master"`` (default) or ``"legacy"`` picks the official ``vqaEval.py`` revision
  (:data:`REVISIONS`).
- :func:`normalize_answer` (the official full answer normalization), :func:`answer_accuracy` (the official
  leave-one-out rule): also what the answer vocabulary's training targets use.
- :func:`score_captions` (references + predictions -> :class:`CaptionMetrics`), :func:`check_caption_inputs`.
- :func:`evaluate_vqa_files`, :func:`evaluate_caption_files`: what ``vlpeft evaluate`` runs.
"""

from vlpeft.eval.caption import CaptionMetrics, check_caption_inputs, score_captions, spice_available
from vlpeft.eval.files import (
    evaluate_caption_files,
    evaluate_vqa_files,
    load_caption_references,
    load_vqa_ground_truth,
)
from vlpeft.eval.vqa import (
    VqaGroundTruth,
    VqaMetrics,
    answer_accuracy,
    check_vqa_predictions,
    evaluate_vqa,
)
from vlpeft.eval.vqa_normalize import DEFAULT_REVISION, REVISIONS, normalize_answer, vqa_revision

__all__ = [
    "DEFAULT_REVISION",
    "REVISIONS",
    "CaptionMetrics",
    "VqaGroundTruth",
    "VqaMetrics",
    "answer_accuracy",
    "check_caption_inputs",
    "check_vqa_predictions",
    "evaluate_caption_files",
    "evaluate_vqa",
    "evaluate_vqa_files",
    "load_caption_references",
    "load_vqa_ground_truth",
    "normalize_answer",
    "score_captions",
    "spice_available",
    "vqa_revision",
]
