"""``build_vl_model``: one VL model from the ``model`` and ``peft`` config sections.

The task picks the family: ``vqa`` → encoder + classifier (``model.vqa_backbone``), ``caption`` → decoder
captioner (``model.caption_backbone``), ``generative`` → encoder-decoder (``model.generative_backbone``).
The vision encoder (``model.vision``) is attached when it must run in the loop (``vision_tower`` is not
``frozen``) or when asked (``with_vision=True``); otherwise the model takes precomputed features and only
the encoder's config is read (for its width). A frozen encoder is also attached lazily the first time a
batch comes with ``pixel_values``.
"""

from __future__ import annotations

from torch import nn

from vlpeft.config import ModelConfig, PeftConfig
from vlpeft.errors import ConfigError
from vlpeft.models.backbones import (
    BACKBONE_FIELD,
    VL_TASKS,
    load_language_backbone,
    load_tokenizer,
    vision_width,
    width_of,
)
from vlpeft.models.base import VLModel
from vlpeft.models.captioner import Captioner
from vlpeft.models.generative import GenerativeVL
from vlpeft.models.towers import language_tower, load_vision_encoder
from vlpeft.models.vqa import VqaClassifier
from vlpeft.tasks import FAMILY_BACKBONE

MODEL_CLASSES: dict[str, type[VLModel]] = {
    "vqa": VqaClassifier,
    "caption": Captioner,
    "generative": GenerativeVL,
}


def backbone_path(task: str, model_cfg: ModelConfig) -> str:
    """The language backbone of ``task`` (``ConfigError`` for an unknown task or an unset backbone)."""
    if task not in VL_TASKS:
        raise ConfigError(f"task {task!r} is unknown (valid: {', '.join(VL_TASKS)})")
    path = getattr(model_cfg, FAMILY_BACKBONE[task])
    if not path:
        raise ConfigError(
            f"{BACKBONE_FIELD[task]}: not set (a hub id or local path is needed for task {task!r})"
        )
    return path


def build_vl_model(
    task: str,
    model_cfg: ModelConfig,
    peft_cfg: PeftConfig,
    n_answers: int | None = None,
    *,
    with_vision: bool = False,
    vision_pooling: str = "cls",
    lm: nn.Module | None = None,
) -> VLModel:
    """Build the VL model of ``task`` with freshly initialised PEFT modules, head and projection.

    ``n_answers`` is required for ``vqa``. ``vision_pooling`` must match the feature store's pooling
    (``features.pooling``) when the encoder runs in the loop. ``lm`` (advanced, used by ``load_vl_model``) is
    an already PEFT-prepared language backbone to use instead of loading and preparing one.
    """
    path = backbone_path(task, model_cfg)
    if task == "vqa" and (n_answers is None or n_answers < 1):
        raise ConfigError(f"task 'vqa' needs the answer vocabulary size n_answers ≥ 1 (got {n_answers})")
    tokenizer = load_tokenizer(path, BACKBONE_FIELD[task])
    if lm is None:
        base = load_language_backbone(task, path)
        family = str(base.config.model_type)
        lm = language_tower(base, peft_cfg, family, f"{BACKBONE_FIELD[task]} {path!r}")
    hf = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    family = str(hf.config.model_type)
    width = width_of(hf.config)
    embed_width = int(hf.get_input_embeddings().weight.shape[-1])
    if embed_width != width:
        # the visual features enter twice, as prefix embeddings and as routing input to hidden-width layers
        raise ConfigError(
            f"{BACKBONE_FIELD[task]}: {path!r} has {embed_width}-wide input embeddings but {width}-wide "
            "hidden states (a factorised embedding, e.g. ELECTRA-small); use a checkpoint whose embedding "
            "size equals its hidden size"
        )
    blind = not model_cfg.visual_prefix and peft_cfg.routing == "none"
    attach = model_cfg.vision_tower != "frozen" or with_vision
    if blind and model_cfg.vision_tower != "frozen":
        raise ConfigError(
            f"model.vision_tower: {model_cfg.vision_tower} trains the vision encoder, but the model does "
            "not use the image (visual_prefix: false and peft.routing: none)"
        )
    v_width = None if blind and not attach else vision_width(model_cfg.vision)
    cls = MODEL_CLASSES[task]
    kwargs = {"n_answers": int(n_answers)} if task == "vqa" else {}
    model = cls(
        lm,
        tokenizer,
        model_cfg,
        peft_cfg,
        family=family,
        lm_path=path,
        width=width,
        visual_width=v_width,
        vision=None,
        vision_pooling=vision_pooling,
        **kwargs,
    )
    if attach:
        model.vision = load_vision_encoder(model_cfg, peft_cfg, vision_pooling)
        model.train(model.training)
    return model
