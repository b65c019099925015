"""Trainable-parameter accounting, reported as the papers do: count and % of the model, by convention.

Conventions (``CONVENTIONS``, data rather than branches):

- ``whole`` (the routing paper; the default): "model" = language backbone + PEFT modules + head + projection
  + the vision encoder. When the encoder is not attached (features precomputed) its parameters are counted
  from its safetensors checkpoint headers (no weights loaded), so the percentage means the same either way.
  The blind model (no image at all) has no vision encoder to count.
- ``vl_adapter`` (VL-Adapter's Table 1, ``VL-T5/src/trainer_base.py:L226-246``): "model" = what the training
  process holds, i.e. the de-duplicated ``parameters()`` of the VL model; the vision encoder counts only when
  it runs in the loop (VL-Adapter precomputes CLIP features, so it never does in Table 1). A model built for
  counting (``build_meta_model``) adds VL-T5's 200 tokens to the vocabulary (100 ``<extra_id_*>`` + 100
  ``<vis_extra_id_*>``, ``multitask.py:L85-100``) as VL-Adapter does before training.

Both count tied weights (an LM head tied to the token embedding) once. ``build_meta_model`` builds the model
of a params file on the **meta device** (no weights, no download): the language backbone from its local
``config.json`` or, for hub ids, from ``ARCHITECTURES`` (dimensions built in code), the PEFT method applied by
``vlpeft.tuners.apply_peft`` exactly as in training, the projection/head of the model class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from vlpeft.errors import ConfigError
from vlpeft.models.backbones import checkpoint_param_count
from vlpeft.models.base import VLModel
from vlpeft.tuners.registry import method_owns

GROUPS: tuple[str, ...] = ("peft", "layernorm", "head", "projection", "vision", "language")


@dataclass(frozen=True)
class Convention:
    """How a report counts: ``vision_from_checkpoint`` = add an unattached vision encoder's parameters to the
    total; ``extra_tokens`` = tokens a model built for counting adds to the LM vocabulary."""

    name: str
    vision_from_checkpoint: bool
    extra_tokens: int
    description: str


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("whole", True, 0, "the whole VL model incl. the vision encoder (the routing paper)"),
        Convention(
            "vl_adapter",
            False,
            200,
            "VL-Adapter's Table 1: the model without the precomputed vision encoder, VL-T5's +200 tokens",
        ),
    )
}


def get_convention(name: str) -> Convention:
    """The convention ``name`` (``ConfigError`` naming the known ones otherwise)."""
    if name not in CONVENTIONS:
        raise ConfigError(f"counting convention {name!r} is unknown (valid: {', '.join(CONVENTIONS)})")
    return CONVENTIONS[name]


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def _group(name: str, norm_params: set[str]) -> str:
    """Group of a trainable parameter; first match wins (a LayerNorm inside the head counts as head)."""
    if name.startswith("head."):
        return "head"
    if name.startswith("projection."):
        return "projection"
    if method_owns(name):
        return "peft"
    if name in norm_params:
        return "layernorm"
    if name.startswith("vision."):
        return "vision"
    return "language"


def param_report(model: VLModel, convention: str = "whole") -> dict[str, Any]:
    """``{"trainable", "total", "percent", "by_group": {peft, layernorm, head, projection, vision, language},
    "vision_counted": bool, "convention": name}``.

    ``by_group`` splits the trainable count: ``peft`` (parameters of a method's own modules, by the registry's
    ``markers``, in either tower),
    ``layernorm`` (trainable norms), ``head`` (VQA classifier), ``projection`` (visual projection / VL-T5
    visual embedding), ``vision`` / ``language`` (other trainable weights, e.g. biases or ``method: full``).
    """
    conv = get_convention(convention)
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
    if conv.vision_from_checkpoint and model.vision is None and model.uses_visual:
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
        "convention": conv.name,
    }


# ------------------------------------------------------------------------------------ meta-device models


def _bart_base() -> Any:
    from transformers import BartConfig

    # facebook/bart-base's config.json: 6+6 layers, d 768, 12 heads, FFN 3072, vocab 50265, 1024 positions.
    return BartConfig(
        vocab_size=50265,
        d_model=768,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        max_position_embeddings=1024,
        activation_function="gelu",
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        scale_embedding=False,
        tie_word_embeddings=True,
    )


# Hub ids whose dimensions are built in code, so counting needs neither a download nor a cache.
ARCHITECTURES: dict[str, Callable[[], Any]] = {"facebook/bart-base": _bart_base}


def architecture_config(name_or_path: str, field: str) -> Any:
    """The transformers config of a backbone without weights: a local ``config.json`` or ``ARCHITECTURES``."""
    from vlpeft.models.backbones import load_config

    if (Path(name_or_path) / "config.json").is_file():
        return load_config(name_or_path, field)
    if name_or_path in ARCHITECTURES:
        return ARCHITECTURES[name_or_path]()
    raise ConfigError(
        f"{field}: {name_or_path!r} is neither a local checkpoint nor a built-in architecture "
        f"(known: {', '.join(ARCHITECTURES)}); counting never downloads"
    )


def feature_width(name_or_path: str) -> int:
    """Width of the visual features of ``model.vision`` (local config, ``ARCHITECTURES``, or the imported
    features' ``IMPORTED_FEATURE_WIDTHS``)."""
    from vlpeft.models.backbones import IMPORTED_FEATURE_WIDTHS, width_of

    if name_or_path in IMPORTED_FEATURE_WIDTHS:
        return IMPORTED_FEATURE_WIDTHS[name_or_path]
    return width_of(architecture_config(name_or_path, "model.vision"))


def build_meta_model(
    family: str, model_cfg: Any, peft_cfg: Any, convention: str = "vl_adapter", n_answers: int = 3129
) -> VLModel:
    """The VL model of ``family`` (``vqa`` / ``caption`` / ``generative``) for ``model_cfg`` and ``peft_cfg``
    on the meta device, with the convention's extra tokens; the vision encoder is never attached."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from vlpeft.models.backbones import BACKBONE_FIELD, width_of
    from vlpeft.models.factory import MODEL_CLASSES, backbone_path
    from vlpeft.models.towers import language_tower

    conv = get_convention(convention)
    path = backbone_path(family, model_cfg)
    config = architecture_config(path, BACKBONE_FIELD[family])
    auto = {"vqa": AutoModel, "caption": AutoModelForCausalLM, "generative": AutoModelForSeq2SeqLM}[family]
    blind = not model_cfg.visual_prefix and peft_cfg.routing == "none"
    with torch.device("meta"):
        lm = auto.from_config(config)
        if conv.extra_tokens:
            # mean_resizing reads values (fails on meta); VL-T5 resizes with new random rows anyway.
            lm.resize_token_embeddings(
                lm.get_input_embeddings().num_embeddings + conv.extra_tokens, mean_resizing=False
            )
        lm = language_tower(lm, peft_cfg, str(config.model_type))
        kwargs = {"n_answers": n_answers} if family == "vqa" else {}
        return MODEL_CLASSES[family](
            lm,
            None,
            model_cfg,
            peft_cfg,
            family=str(config.model_type),
            lm_path=path,
            width=width_of(config),
            visual_width=None if blind else feature_width(model_cfg.vision),
            **kwargs,
        )


def count_params(
    params: Any, section: str, family: str | None = None, convention: str = "vl_adapter"
) -> dict[str, Any]:
    """``param_report`` of the model that ``params`` describes for the training section ``section`` (e.g.
    ``vqa``), built on the meta device; ``family`` defaults to the family of the task of that section.

    Adds ``method``, ``section`` and ``family`` to the report.
    """
    from vlpeft.tasks import TASKS

    peft_cfg = getattr(getattr(params, section, None), "peft", None)
    if peft_cfg is None:
        sections = [n for n in type(params).model_fields if hasattr(getattr(params, n), "peft")]
        raise ConfigError(
            f"section {section!r} has no peft settings (sections with one: {', '.join(sections)})"
        )
    if family is None:
        spec = next((t for t in TASKS.values() if t.section == section), None)
        if spec is None:
            raise ConfigError(f"section {section!r} belongs to no task: pass the model family")
        family = spec.family
    model = build_meta_model(family, params.model, peft_cfg, convention)
    return {
        "method": peft_cfg.method,
        "section": section,
        "family": family,
        **param_report(model, convention),
    }
