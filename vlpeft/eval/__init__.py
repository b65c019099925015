"""Evaluation: official VQA accuracy and COCO caption metrics (pure functions plus file-level wrappers).

Public API:

- :class:`VqaGroundTruth` (``from_annotations`` / ``from_records``, then ``.score(preds) -> VqaMetrics``),
  :func:`evaluate_vqa` (annotation records + results list -> metrics), :func:`check_vqa_predictions`.
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
from vlpeft.eval.vqa import VqaGroundTruth, VqaMetrics, check_vqa_predictions, evaluate_vqa
from vlpeft.eval.vqa_normalize import normalize_prediction

__all__ = [
    "CaptionMetrics",
    "VqaGroundTruth",
    "VqaMetrics",
    "check_caption_inputs",
    "check_vqa_predictions",
    "evaluate_caption_files",
    "evaluate_vqa",
    "evaluate_vqa_files",
    "load_caption_references",
    "load_vqa_ground_truth",
    "normalize_prediction",
    "score_captions",
    "spice_available",
]
