"""Vision-language models: VQA classifier, captioner, encoder-decoder; factory, persistence, accounting.

Public API::

    build_vl_model(task, model_cfg, peft_cfg, n_answers=None, *, with_vision=False, vision_pooling="cls")
    save_vl_model(model, out_dir)  /  load_vl_model(model_dir, device="cpu")
    param_report(model) -> {"trainable", "total", "percent", "by_group", "vision_counted"}

Batch interface (``model(**batch)`` → ``VLOutput(loss, logits)``): ``visual`` (B, m, d) or
``pixel_values``; ``input_ids`` / ``attention_mask``; VQA ``targets`` (B, n_answers) soft scores; caption /
generative ``labels``.
Each model builds its own text inputs: ``VqaClassifier.encode_questions``, ``Captioner.encode_captions``,
``GenerativeVL.encode_texts`` / ``encode_targets``.
"""

from vlpeft.models.accounting import param_report
from vlpeft.models.base import VLModel, VLOutput
from vlpeft.models.captioner import Captioner
from vlpeft.models.factory import build_vl_model
from vlpeft.models.generative import TASK_PREFIXES, GenerativeVL
from vlpeft.models.persistence import load_vl_model, read_model_meta, save_vl_model
from vlpeft.models.vqa import VqaClassifier

__all__ = [
    "TASK_PREFIXES",
    "Captioner",
    "GenerativeVL",
    "VLModel",
    "VLOutput",
    "VqaClassifier",
    "build_vl_model",
    "load_vl_model",
    "param_report",
    "read_model_meta",
    "save_vl_model",
]
