"""Trainable-parameter accounting, reported as the papers do: count and % of the whole model.

"Whole model" = language backbone + PEFT modules + head + projection + the vision encoder. When the encoder
is not attached (features precomputed), its parameters are counted from its safetensors checkpoint headers
(no weights loaded), so the percentage means the same thing either way. The blind model (no image at all)
has no vision encoder to count. Tied weights (GPT-2's LM head = token embedding) count once.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vlpeft.models.backbones import checkpoint_param_count
from vlpeft.models.base import VLModel

GROUPS: tuple[str, ...] = ("peft", "layernorm", "head", "projection", "vision", "language")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def _group(name: str, norm_params: set[str]) -> str:
    """Group of a trainable parameter; first match wins (a LayerNorm inside the head counts as head)."""
    if name.startswith("head."):
        return "head"
    if name.startswith("projection."):
        return "projection"
    if ".lora_" in name or ".adapter." in name:
        return "peft"
    if name in norm_params:
        return "layernorm"
    if name.startswith("vision."):
        return "vision"
    return "language"


def param_report(model: VLModel) -> dict[str, Any]:
    """``{"trainable", "total", "percent", "by_group": {peft, layernorm, head, projection, vision, language},
    "vision_counted": bool}``.

    ``by_group`` splits the trainable count: ``peft`` (LoRA A/B, adapters, in either tower), ``layernorm``
    (trainable norms of either tower), ``head`` (VQA classifier), ``projection`` (visual projection),
    ``vision`` / ``language`` (other trainable weights of a fully trained tower, e.g. ``method: full``).
    """
    norm_params = {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, module in model.named_modules()
        if _is_norm(module)
        for p_name, _ in module.named_parameters(recurse=False)
    }
    by_group = dict.fromkeys(GROUPS, 0)
    trainable = total = 0
    for name, p in model.named_parameters():  # shared (tied) parameters are listed once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            by_group[_group(name, norm_params)] += p.numel()
    vision_counted = model.vision is not None
    if model.vision is None and model.uses_visual:
        n = checkpoint_param_count(model.model_cfg.vision)
        if n is not None:
            total += n
            vision_counted = True
    return {
        "trainable": trainable,
        "total": total,
        "percent": 100.0 * trainable / total if total else 0.0,
        "by_group": by_group,
        "vision_counted": vision_counted,
    }
