"""The one table of model families: which tower each transformers ``model_type`` can take, where PEFT goes in
it, and the few traits the towers need (pure data, no torch).

Module names come from the transformers source of the pinned version (5.x; e.g. ViT's attention is
``q_proj``/``k_proj``/``v_proj``/``o_proj`` there, BERT's is still ``query``/``key``/``value``).

- ``lora``: peft ``target_modules`` (matched against the end of each module name); the papers adapt query and
  value. ``adapter``: position -> regular expression (``re.search`` on full module names) selecting the output
  projection of a sublayer, so the adapter acts on the sublayer output before dropout, residual and
  LayerNorm (paper-notes §A.5, §F.3). ``hyper``: Hyperformer's (pattern with groups stack and layer,
  position type) rows.
- Towers: ``vision`` (image encoder), ``vqa`` (text encoder + classifier), ``caption`` (decoder),
  ``generative`` (encoder-decoder).
- A family not in the table can still be used: its module names are not known, so LoRA and adapters on it
  need ``peft.target_modules`` (language tower) or ``peft.vision_target_modules`` (vision tower).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from vlpeft.errors import ConfigError

Tower = Literal["vision", "vqa", "caption", "generative"]
TOWERS: tuple[str, ...] = ("vision", "vqa", "caption", "generative")

# The config field that names each tower's checkpoint (error messages).
TOWER_FIELD: dict[str, str] = {
    "vision": "model.vision",
    "vqa": "model.vqa_backbone",
    "caption": "model.caption_backbone",
    "generative": "model.generative_backbone",
}
# The config field that overrides the PEFT targets of each tower.
TARGETS_FIELD: dict[str, str] = {
    "vision": "peft.vision_target_modules",
    "vqa": "peft.target_modules",
    "caption": "peft.target_modules",
    "generative": "peft.target_modules",
}

Pooler = Literal["module", "output", "none"]


@dataclass(frozen=True)
class Family:
    """What the code needs to know about one transformers ``model_type`` (see the module docstring)."""

    towers: frozenset[str]
    lora: tuple[str, ...]
    adapter: Mapping[str, str]
    hyper: tuple[tuple[str, str], ...] = ()
    # fused [q | k | v] projections (peft.fused_qkv) and transformers Conv1D weights stored (in, out)
    fused_qkv: tuple[str, ...] = ()
    conv1d: bool = False
    # language towers: kwargs for from_pretrained (no random pooler), how positions are counted
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    positions_after_pad: bool = False  # RoBERTa: position ids start after the padding index
    relative_positions: bool = False  # T5: no learned absolute positions, no hard length limit
    # vision towers
    vision_class: str | None = None  # transformers class giving the vision tower of a full (dual) checkpoint
    prefix_tokens: int = 1  # tokens before the patch grid in last_hidden_state (CLS, DeiT's distillation)
    pooler: Pooler = "module"  # module: a pooler layer that must come trained; output: pooler_output is the
    # checkpoint's own trained pooling (CLIP post-LayerNorm, SigLIP head, ConvNeXt LayerNorm); none: no pooler
    token_grid: bool = True  # False: a CNN whose output is a feature map (pooled features only)
    any_resolution: bool = False  # takes any input size as is (DINOv2 always interpolates; a CNN)


def _ro(d: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(d))


_NO_POOLER = MappingProxyType({"add_pooling_layer": False})
_BERT_ADAPTER = _ro(
    {
        "attention": r"attention\.output\.dense$",
        # the FFN output dense is `<layer>.output.dense`; the attention one is excluded by the preceding name.
        "ffn": r"(?<!attention)\.output\.dense$",
    }
)
_BERT = Family(frozenset({"vqa"}), ("query", "value"), _BERT_ADAPTER, load_kwargs=_NO_POOLER)
_ROBERTA = Family(
    frozenset({"vqa"}), ("query", "value"), _BERT_ADAPTER, load_kwargs=_NO_POOLER, positions_after_pad=True
)
_VIT = Family(
    frozenset({"vision"}),
    ("q_proj", "v_proj"),
    _ro({"attention": r"\.attention\.o_proj$", "ffn": r"\.mlp\.fc2$"}),
)
_CLIP_LIKE_ADAPTER = _ro({"attention": r"\.self_attn\.out_proj$", "ffn": r"\.mlp\.fc2$"})
_DECODER_ADAPTER = _ro({"attention": r"\.self_attn\.o_proj$", "ffn": r"\.mlp\.down_proj$"})
_DECODER = Family(frozenset({"caption"}), ("q_proj", "v_proj"), _DECODER_ADAPTER)
_BART = Family(
    frozenset({"generative"}),
    ("q_proj", "v_proj"),
    _ro({"attention": r"\.(self_attn|encoder_attn)\.out_proj$", "ffn": r"\.fc2$"}),
    hyper=(
        (r"(?P<stack>encoder|decoder)\.layers\.(?P<layer>\d+)\.self_attn\.out_proj$", "self_attention"),
        (r"(?P<stack>decoder)\.layers\.(?P<layer>\d+)\.encoder_attn\.out_proj$", "cross_attention"),
        (r"(?P<stack>encoder|decoder)\.layers\.(?P<layer>\d+)\.fc2$", "feed_forward"),
    ),
)
_T5 = Family(
    frozenset({"generative"}),
    ("q", "v"),
    _ro({"attention": r"\.(SelfAttention|EncDecAttention)\.o$", "ffn": r"\.DenseReluDense\.wo$"}),
    hyper=(
        (
            r"(?P<stack>encoder|decoder)\.block\.(?P<layer>\d+)\.layer\.\d+\.SelfAttention\.o$",
            "self_attention",
        ),
        (r"(?P<stack>decoder)\.block\.(?P<layer>\d+)\.layer\.\d+\.EncDecAttention\.o$", "cross_attention"),
        (
            r"(?P<stack>encoder|decoder)\.block\.(?P<layer>\d+)\.layer\.\d+\.DenseReluDense\.wo$",
            "feed_forward",
        ),
    ),
    relative_positions=True,
)
_CLIP = Family(
    frozenset({"vision"}),
    ("q_proj", "v_proj"),
    _CLIP_LIKE_ADAPTER,
    vision_class="CLIPVisionModel",
    pooler="output",
)
_SIGLIP = Family(
    frozenset({"vision"}),
    ("q_proj", "v_proj"),
    _CLIP_LIKE_ADAPTER,
    vision_class="SiglipVisionModel",
    prefix_tokens=0,  # no CLS token: the patch tokens only
    pooler="output",
)

FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        # ---- vision encoders
        "vit": _VIT,
        "deit": Family(_VIT.towers, _VIT.lora, _VIT.adapter, prefix_tokens=2),  # CLS + distillation token
        # DINOv2: pooler_output is the CLS token itself (no pooler weights); FFN fc2 or SwiGLU down_proj
        "dinov2": Family(
            _VIT.towers,
            _VIT.lora,
            _ro({"attention": r"\.attention\.o_proj$", "ffn": r"\.mlp\.(fc2|down_proj)$"}),
            pooler="none",
            any_resolution=True,
        ),
        "clip": _CLIP,
        "clip_vision_model": _CLIP,
        "siglip": _SIGLIP,
        "siglip_vision_model": _SIGLIP,
        # ConvNeXt: a feature map, pooled by its trained final LayerNorm; its blocks' pointwise MLP is Linear
        "convnext": Family(
            frozenset({"vision"}),
            ("pwconv1", "pwconv2"),
            _ro({"ffn": r"\.pwconv2$"}),
            prefix_tokens=0,
            pooler="output",
            token_grid=False,
            any_resolution=True,
        ),
        # ---- text encoders (VQA classifier)
        "bert": _BERT,
        "electra": Family(frozenset({"vqa"}), ("query", "value"), _BERT_ADAPTER),
        "roberta": _ROBERTA,
        "xlm-roberta": _ROBERTA,
        "camembert": _ROBERTA,
        "distilbert": Family(
            frozenset({"vqa"}),
            ("q_lin", "v_lin"),
            _ro({"attention": r"\.attention\.out_lin$", "ffn": r"\.ffn\.lin2$"}),
        ),
        "deberta-v2": Family(frozenset({"vqa"}), ("query_proj", "value_proj"), _BERT_ADAPTER),
        # ---- decoders (captioner)
        "gpt2": Family(
            frozenset({"caption"}),
            ("c_attn",),  # fused QKV Conv1D: q and v thirds only by default (peft.fused_qkv)
            _ro({"attention": r"\.attn\.c_proj$", "ffn": r"\.mlp\.c_proj$"}),
            fused_qkv=("c_attn",),
            conv1d=True,
        ),
        "llama": _DECODER,
        "qwen2": _DECODER,
        "gemma": _DECODER,
        "mistral": _DECODER,
        # ---- encoder-decoders (generative)
        "bart": _BART,
        "mbart": _BART,
        "t5": _T5,
        "mt5": _T5,
    }
)


def family_of(model_type: str) -> Family | None:
    """The table row of ``model_type``, or ``None`` for a family not in the table."""
    return FAMILIES.get(model_type)


def families_for(tower: str) -> tuple[str, ...]:
    """The model types in the table that can take ``tower``, sorted."""
    return tuple(sorted(name for name, fam in FAMILIES.items() if tower in fam.towers))


def check_tower(model_type: str, tower: str, where: str) -> None:
    """Refuse a known family in a tower it cannot take (``ConfigError`` naming the families that can).

    A family not in the table passes: the loader decides whether transformers can build it for the tower.
    """
    fam = FAMILIES.get(model_type)
    if fam is not None and tower not in fam.towers:
        can = sorted(t for t in fam.towers)
        raise ConfigError(
            f"{where} is a {model_type!r} model, a {'/'.join(can)} family; {TOWER_FIELD[tower]} takes one of "
            f"{', '.join(families_for(tower))} (or another transformers family with peft target modules set)"
        )
