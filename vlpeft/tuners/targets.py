"""Where PEFT modules go, per transformers ``model_type`` (the paper adapts query and value with LoRA).

LoRA targets are peft ``target_modules`` names (matched against the end of each module name). Adapter
positions are regular expressions matched (``re.search``) against full module names: each selects the output
projection of a sublayer, so the adapter acts on the sublayer output before dropout, residual and LayerNorm
(paper-notes §A.5, §F.3).
"""

from __future__ import annotations

import re

from vlpeft.errors import ConfigError

_BERT_LIKE_LORA = ["query", "value"]
_BERT_LIKE_ADAPTER = {
    "attention": r"attention\.output\.dense$",
    # the FFN output dense is `<layer>.output.dense`; the attention one is excluded by the preceding name.
    "ffn": r"(?<!attention)\.output\.dense$",
}

LORA_TARGETS: dict[str, list[str]] = {
    "bert": _BERT_LIKE_LORA,
    "roberta": _BERT_LIKE_LORA,
    "xlm-roberta": _BERT_LIKE_LORA,
    "vit": ["q_proj", "v_proj"],  # transformers 5 renamed ViT's query/value
    "gpt2": ["c_attn"],  # fused QKV Conv1D: q and v thirds only by default (peft.fused_qkv, FUSED_QKV)
    "bart": ["q_proj", "v_proj"],
    "mbart": ["q_proj", "v_proj"],
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "camembert": _BERT_LIKE_LORA,
}

# Fused projections whose output is [q | k | v] (one third each): peft.fused_qkv "qv" adapts q and v only.
FUSED_QKV: dict[str, tuple[str, ...]] = {"gpt2": ("c_attn",)}
QKV_SLICES: dict[str, tuple[str, ...] | None] = {"qv": ("q", "v"), "all": None}

_BART_ADAPTER = {"attention": r"\.(self_attn|encoder_attn)\.out_proj$", "ffn": r"\.fc2$"}
_T5_ADAPTER = {"attention": r"\.(SelfAttention|EncDecAttention)\.o$", "ffn": r"\.DenseReluDense\.wo$"}

ADAPTER_POSITIONS: dict[str, dict[str, str]] = {
    "bert": _BERT_LIKE_ADAPTER,
    "roberta": _BERT_LIKE_ADAPTER,
    "xlm-roberta": _BERT_LIKE_ADAPTER,
    "camembert": _BERT_LIKE_ADAPTER,
    "vit": {"attention": r"\.attention\.o_proj$", "ffn": r"\.mlp\.fc2$"},
    "gpt2": {"attention": r"\.attn\.c_proj$", "ffn": r"\.mlp\.c_proj$"},
    "bart": _BART_ADAPTER,
    "mbart": _BART_ADAPTER,
    "t5": _T5_ADAPTER,
    "mt5": _T5_ADAPTER,
}


def lora_targets(family: str, override: list[str] | None = None) -> list[str]:
    """The LoRA ``target_modules`` for ``family`` (``override`` wins when given)."""
    if override:
        return list(override)
    if family not in LORA_TARGETS:
        raise ConfigError(
            f"model family {family!r} has no default LoRA targets "
            f"(known: {', '.join(sorted(LORA_TARGETS))}); "
            "set peft.target_modules"
        )
    return list(LORA_TARGETS[family])


def adapter_patterns(family: str, positions: list[str], override: list[str] | None = None) -> list[str]:
    """Regular expressions selecting the modules whose output gets an adapter.

    ``override`` (``peft.target_modules``) are module-name suffixes, used instead of the family default.
    """
    if override:
        return [r"(^|\.)" + re.escape(p) + "$" for p in override]
    if family not in ADAPTER_POSITIONS:
        raise ConfigError(
            f"model family {family!r} has no default adapter positions "
            f"(known: {', '.join(sorted(ADAPTER_POSITIONS))}); set peft.target_modules"
        )
    table = ADAPTER_POSITIONS[family]
    return [table[p] for p in positions]


def fused_lora_layout(family: str, fused_qkv: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(adapted thirds, fused module names) for ``family``: what ``routed_lora_config`` takes."""
    return QKV_SLICES[fused_qkv], FUSED_QKV.get(family, ())


# Families whose projections are transformers ``Conv1D`` (weight stored (in, out)): peft's fan_in_fan_out.
CONV1D_FAMILIES: frozenset[str] = frozenset({"gpt2"})


def fan_in_fan_out(family: str) -> bool:
    """Whether ``family`` stores its projection weights transposed (GPT-2's ``Conv1D``)."""
    return family in CONV1D_FAMILIES


# Hyperformer positions: (regex with groups stack and layer, position type) per family; the sublayer outputs
# the adapters wrap (as ADAPTER_POSITIONS), split by stack, layer index and kind.
_BART_HYPER = (
    (r"(?P<stack>encoder|decoder)\.layers\.(?P<layer>\d+)\.self_attn\.out_proj$", "self_attention"),
    (r"(?P<stack>decoder)\.layers\.(?P<layer>\d+)\.encoder_attn\.out_proj$", "cross_attention"),
    (r"(?P<stack>encoder|decoder)\.layers\.(?P<layer>\d+)\.fc2$", "feed_forward"),
)
_T5_HYPER = (
    (r"(?P<stack>encoder|decoder)\.block\.(?P<layer>\d+)\.layer\.\d+\.SelfAttention\.o$", "self_attention"),
    (r"(?P<stack>decoder)\.block\.(?P<layer>\d+)\.layer\.\d+\.EncDecAttention\.o$", "cross_attention"),
    (r"(?P<stack>encoder|decoder)\.block\.(?P<layer>\d+)\.layer\.\d+\.DenseReluDense\.wo$", "feed_forward"),
)
HYPER_POSITIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "bart": _BART_HYPER,
    "mbart": _BART_HYPER,
    "t5": _T5_HYPER,
    "mt5": _T5_HYPER,
}


def hyper_positions(family: str) -> tuple[tuple[str, str], ...]:
    """Hyperformer's (pattern, position type) table of ``family``."""
    if family not in HYPER_POSITIONS:
        raise ConfigError(
            f"Hyperformer has no positions for model family {family!r} (known: {', '.join(HYPER_POSITIONS)})"
        )
    return HYPER_POSITIONS[family]
