"""Tiny backbones for the VL model tests, built offline from configs and saved like hub checkpoints.

One session-scoped directory holds a word-level tokenizer (built with ``tokenizers``), a tiny ViT (width 16,
and a width-24 one for mismatch tests), RoBERTa, GPT-2 and BART (width 16), each written with
``save_pretrained`` and loaded by the code under test with ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vl_helpers import WIDTH, word_tokenizer

from vlpeft.config import ModelConfig


def _vit(path: Path, width: int) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = ViTConfig(
        hidden_size=width,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * width,
        image_size=32,
        patch_size=16,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are fastest on one thread; with 2 threads on a loaded 2-core machine OpenMP barriers made
    a 1 ms training step take ~1 s. Restored afterwards (the setting is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def backbones(tmp_path_factory) -> dict[str, str]:
    """Paths of tiny saved backbones: vit, vit24, roberta, gpt2, bart (each with the tokenizer beside it)."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertForMaskedLM,
        GPT2Config,
        GPT2LMHeadModel,
        RobertaConfig,
        RobertaForMaskedLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("backbones")
    tok = word_tokenizer()
    v = len(tok)
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    # no dropout anywhere, so train-mode computations (gradient checkpointing) are deterministic
    bert_like = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    models = {
        "roberta": RobertaForMaskedLM(
            RobertaConfig(
                vocab_size=v,
                hidden_size=WIDTH,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=48,
                **bert_like,
                **ids,
            )
        ),
        "bert": BertForMaskedLM(
            BertConfig(
                vocab_size=v,
                hidden_size=WIDTH,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=48,
                **bert_like,
                **ids,
            )
        ),
        "gpt2": GPT2LMHeadModel(
            GPT2Config(
                vocab_size=v,
                n_embd=WIDTH,
                n_layer=2,
                n_head=2,
                n_positions=48,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                **ids,
            )
        ),
        "bart": BartForConditionalGeneration(
            BartConfig(
                vocab_size=v,
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
                attention_dropout=0.0,
                activation_dropout=0.0,
                **ids,
            )
        ),
        "t5": T5ForConditionalGeneration(
            T5Config(
                vocab_size=v,
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
    paths = {}
    for name, model in models.items():
        path = root / name
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths[name] = str(path)
    for name, width in (("vit", WIDTH), ("vit24", 24)):
        _vit(root / name, width)
        paths[name] = str(root / name)
    return paths


@pytest.fixture
def model_cfg(backbones) -> ModelConfig:
    """ModelConfig pointing at the tiny backbones (visual prefix on, no projection, frozen vision)."""
    return ModelConfig(
        vision=backbones["vit"],
        vqa_backbone=backbones["roberta"],
        caption_backbone=backbones["gpt2"],
        generative_backbone=backbones["bart"],
    )
