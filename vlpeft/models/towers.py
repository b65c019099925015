"""Per-tower trainability: the language tower by ``peft.method``, the vision tower by ``model.vision_tower``.

Language tower: ``vlpeft.tuners.apply_peft`` (any registered method, routing inside bottlenecks, trainable
LayerNorms with ``peft.train_layernorm``).

Vision tower (only when the encoder runs in the loop on ``pixel_values``): ``frozen`` (the papers' setting:
no gradients, always eval mode), ``full`` (every ViT parameter), or another method registered with
``vision_tower`` (``lora`` / ``adapter``) with the language
tower's rank, alpha, dropout and adapter settings but **no routing** (the vision tower is where visual
features come from) and its own targets: ``peft.vision_target_modules``, else the family default
(``vlpeft.families``: query and value).

A family without default targets is one line naming the tower's own targets setting.
"""

from __future__ import annotations

from torch import nn

from vlpeft.config import ModelConfig, PeftConfig
from vlpeft.tuners.targets import MissingTargetsError


def vision_peft_config(model_cfg: ModelConfig, peft_cfg: PeftConfig) -> PeftConfig:
    """The ``PeftConfig`` applied to the vision tower (see the module docstring)."""
    return peft_cfg.model_copy(
        update={
            "method": model_cfg.vision_tower,
            "routing": "none",
            "target_modules": peft_cfg.vision_target_modules,
        }
    )


def load_vision_encoder(model_cfg: ModelConfig, peft_cfg: PeftConfig, pooling: str = "cls") -> nn.Module:
    """The ``VisionEncoder`` of ``model.vision`` with ``model.vision_tower`` trainability applied."""
    from vlpeft.models.backbones import quiet_transformers
    from vlpeft.models.vision import VisionEncoder
    from vlpeft.tuners import apply_peft

    with quiet_transformers():
        encoder = VisionEncoder.from_pretrained(
            model_cfg.vision, pooling=pooling, image_size=model_cfg.image_size
        )
    encoder.requires_grad_(False)
    if model_cfg.vision_tower != "frozen":
        family = str(getattr(encoder.model.config, "model_type", "vit"))
        # apply_peft injects its layers into encoder.model in place; for LoRA it returns a PeftModel wrapper
        # whose base is encoder.model, so encoder.forward runs the adapted ViT. Keep the wrapper's modules
        # out of the module tree (parameters would be registered twice).
        try:
            wrapped = apply_peft(encoder.model, vision_peft_config(model_cfg, peft_cfg), family)
        except MissingTargetsError as exc:
            raise exc.for_field("peft.vision_target_modules", f"model.vision {model_cfg.vision!r}") from None
        if wrapped is not encoder.model:
            object.__setattr__(encoder, "_peft_wrapper", wrapped)
    return encoder


def language_tower(lm: nn.Module, peft_cfg: PeftConfig, family: str, where: str = "") -> nn.Module:
    """Freeze the language backbone and apply ``peft.method`` to it (returns the module to keep).

    ``where`` (e.g. ``model.vqa_backbone 'path'``) prefixes the error of a family without default targets.
    """
    from vlpeft.tuners import apply_peft

    lm.requires_grad_(False)
    try:
        return apply_peft(lm, peft_cfg, family)
    except MissingTargetsError as exc:
        raise exc.for_field("peft.target_modules", where) from None
