"""Tiny checkpoints of every family in ``vlpeft.families``, built offline from each family's transformers
config and saved like hub checkpoints (config + safetensors + tokenizer or image processor).

Widths are 16 everywhere (so ``projection: none`` works across towers); one or two layers; the word-level
tokenizer of ``conftest.py`` beside every language model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WIDTH = 16
IMAGE = 32  # the processors' output size


def _vision_models() -> dict[str, tuple[Any, Any]]:
    """name -> (model, image processor)."""
    import transformers as tf

    vit_like = dict(
        hidden_size=WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * WIDTH,
        image_size=IMAGE,
        patch_size=16,
    )
    square = {"height": IMAGE, "width": IMAGE}
    clip_like = dict(
        hidden_size=WIDTH,
        intermediate_size=2 * WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE,
        patch_size=16,
    )
    crop = dict(size={"shortest_edge": IMAGE}, crop_size=square)
    return {
        "vit": (
            tf.ViTModel(tf.ViTConfig(**vit_like), add_pooling_layer=False),
            tf.ViTImageProcessor(size=square),
        ),
        "deit": (
            tf.DeiTModel(tf.DeiTConfig(**vit_like), add_pooling_layer=False),
            tf.DeiTImageProcessor(size=square, crop_size=square),
        ),
        "dinov2": (
            tf.Dinov2Model(
                tf.Dinov2Config(**{**vit_like, "image_size": 64, "patch_size": 8, "mlp_ratio": 2})
            ),
            tf.BitImageProcessor(**crop),  # DINOv2's processor: resize shortest edge, centre crop
        ),
        "clip": (
            tf.CLIPVisionModel(tf.CLIPVisionConfig(**clip_like)),
            tf.CLIPImageProcessor(**crop),
        ),
        "siglip": (
            tf.SiglipVisionModel(tf.SiglipVisionConfig(**clip_like)),
            tf.SiglipImageProcessor(size=square),
        ),
        "convnext": (
            tf.ConvNextModel(
                tf.ConvNextConfig(hidden_sizes=[8, WIDTH], depths=[1, 1], image_size=IMAGE, num_stages=2)
            ),
            tf.ConvNextImageProcessor(size={"shortest_edge": IMAGE}),
        ),
    }


def _language_models(vocab: int) -> dict[str, Any]:
    import transformers as tf

    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    bert_like = dict(
        vocab_size=vocab,
        hidden_size=WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=48,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **ids,
    )
    # rotary positions, grouped-query attention (4 query heads over 2 key/value heads), separate q/k/v
    decoder = dict(
        vocab_size=vocab,
        hidden_size=WIDTH,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        max_position_embeddings=64,
        **ids,
    )
    return {
        "bert": tf.BertModel(tf.BertConfig(**bert_like), add_pooling_layer=False),
        "roberta": tf.RobertaModel(tf.RobertaConfig(**bert_like), add_pooling_layer=False),
        "xlm-roberta": tf.XLMRobertaModel(tf.XLMRobertaConfig(**bert_like), add_pooling_layer=False),
        "electra": tf.ElectraModel(tf.ElectraConfig(**bert_like, embedding_size=WIDTH)),
        "deberta-v2": tf.DebertaV2Model(
            tf.DebertaV2Config(
                **bert_like,
                relative_attention=True,
                position_biased_input=False,
                pos_att_type=["p2c", "c2p"],
                position_buckets=8,
                max_relative_positions=-1,
            )
        ),
        "distilbert": tf.DistilBertModel(
            tf.DistilBertConfig(
                vocab_size=vocab,
                dim=WIDTH,
                n_layers=1,
                n_heads=2,
                hidden_dim=32,
                max_position_embeddings=48,
                dropout=0.0,
                attention_dropout=0.0,
                pad_token_id=0,
            )
        ),
        "gpt2": tf.GPT2LMHeadModel(
            tf.GPT2Config(
                vocab_size=vocab,
                n_embd=WIDTH,
                n_layer=1,
                n_head=2,
                n_positions=48,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                **ids,
            )
        ),
        "llama": tf.LlamaForCausalLM(tf.LlamaConfig(**decoder)),
        "qwen2": tf.Qwen2ForCausalLM(tf.Qwen2Config(**decoder)),
        "gemma": tf.GemmaForCausalLM(tf.GemmaConfig(**decoder)),
        "bart": tf.BartForConditionalGeneration(
            tf.BartConfig(
                vocab_size=vocab,
                d_model=WIDTH,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=32,
                decoder_ffn_dim=32,
                max_position_embeddings=64,
                decoder_start_token_id=2,
                forced_eos_token_id=None,
                dropout=0.0,
                **ids,
            )
        ),
        "t5": tf.T5ForConditionalGeneration(
            tf.T5Config(
                vocab_size=vocab,
                d_model=WIDTH,
                d_kv=8,
                d_ff=32,
                num_layers=1,
                num_heads=2,
                dropout_rate=0.0,
                decoder_start_token_id=0,
                pad_token_id=0,
                eos_token_id=2,
            )
        ),
    }


# The tower each language family is tested in.
LANGUAGE_TASK = {
    "bert": "vqa",
    "roberta": "vqa",
    "xlm-roberta": "vqa",
    "electra": "vqa",
    "deberta-v2": "vqa",
    "distilbert": "vqa",
    "gpt2": "caption",
    "llama": "caption",
    "qwen2": "caption",
    "gemma": "caption",
    "bart": "generative",
    "t5": "generative",
}
VISION = ("vit", "deit", "dinov2", "clip", "siglip", "convnext")


def build_zoo(root: Path, tokenizer: Any) -> dict[str, str]:
    """Save every tiny family checkpoint under ``root``; returns name -> path."""
    torch.manual_seed(0)
    paths: dict[str, str] = {}
    for name, (model, processor) in _vision_models().items():
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        paths[name] = str(root / name)
    for name, model in _language_models(len(tokenizer)).items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths
