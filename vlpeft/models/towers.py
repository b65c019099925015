"""Per-tower trainability: the language tower by ``peft.method``, the vision tower by ``model.vision_tower``.

Language tower: ``vlpeft.tuners.apply_peft`` (any registered method, routing inside bottlenecks, trainable
LayerNorms with ``peft.train_layernorm``).

Vision tower (only when the encoder runs in the loop on ``pixel_values``): ``frozen`` (the papers' setting:
no gradients, always eval mode), ``full`` (every ViT parameter), or another method registered with
``vision_tower`` (``lora`` / ``adapter``) with the language
tower's rank, alpha, dropout and adapter settings but **no routing** (the vision tower is where visual
features come from) and the family-default targets (ViT query/value).
"""

from __future__ import annotations

from torch import nn

from vlpeft.config import ModelConfig, PeftConfig


def vision_peft_config(model_cfg: ModelConfig, peft_cfg: PeftConfig) -> PeftConfig:
    """The ``PeftConfig`` applied to the vision tower (see the module docstring)."""
    return peft_cfg.model_copy(
        update={"method": model_cfg.vision_tower, "routing": "none", "target_modules": None}
    )


def load_vision_encoder(model_cfg: ModelConfig, peft_cfg: PeftConfig, pooling: str = "cls") -> nn.Module:
    """The ``VisionEncoder`` of ``model.vision`` with ``model.vision_tower`` trainability applied."""
    from vlpeft.models.backbones import quiet_transformers
    from vlpeft.models.vision import VisionEncoder
    from vlpeft.tuners import apply_peft

    with quiet_transformers():
        encoder = VisionEncoder.from_pretrained(model_cfg.vision, pooling=pooling)
    encoder.requires_grad_(False)
    if model_cfg.vision_tower != "frozen":
        family = str(getattr(encoder.model.config, "model_type", "vit"))
        # apply_peft injects its layers into encoder.model in place; for LoRA it returns a PeftModel wrapper
        # whose base is encoder.model, so encoder.forward runs the adapted ViT. Keep the wrapper's modules
        # out of the module tree (parameters would be registered twice).
        wrapped = apply_peft(encoder.model, vision_peft_config(model_cfg, peft_cfg), family)
        if wrapped is not encoder.model:
            object.__setattr__(encoder, "_peft_wrapper", wrapped)
    return encoder


def language_tower(lm: nn.Module, peft_cfg: PeftConfig, family: str) -> nn.Module:
    """Freeze the language backbone and apply ``peft.method`` to it (returns the module to keep)."""
    from vlpeft.tuners import apply_peft

    lm.requires_grad_(False)
    return apply_peft(lm, peft_cfg, family)
