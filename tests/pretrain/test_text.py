"""Text pretraining pieces: BERT masking statistics, batching, the LR schedule, tiny MLM/CLM runs."""

from __future__ import annotations

import math

import pytest
import torch

from vlpeft.config import PretrainConfig
from vlpeft.pretrain.common import warmup_cosine
from vlpeft.pretrain.text import (
    IGNORE,
    build_bart,
    build_gpt2,
    build_roberta,
    collate,
    encode_lines,
    infill_spans,
    mask_tokens,
    pretrain_clm,
    pretrain_denoise,
    pretrain_mlm,
)
from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer


def test_mask_tokens_follows_80_10_10():
    n_special, vocab, mask_id = 5, 60, 4
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(n_special, vocab, (400, 250), generator=g)
    maskable = torch.rand(ids.shape, generator=g) < 0.8  # e.g. padding / specials are not maskable
    inputs, labels = mask_tokens(ids, maskable, mask_id, n_special, vocab, torch.Generator().manual_seed(1))
    picked = labels != IGNORE
    assert not picked[~maskable].any()
    assert torch.equal(labels[picked], ids[picked])
    assert torch.equal(inputs[~picked], ids[~picked])
    n = picked.sum().item()
    assert n / maskable.sum().item() == pytest.approx(0.15, abs=0.005)
    masked = (inputs[picked] == mask_id).sum().item() / n
    kept = (inputs[picked] == ids[picked]).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.01)
    # kept = the 10 % "keep" plus random draws that hit the original word (1/55 of the other 10 %).
    assert kept == pytest.approx(0.1 + 0.1 / (vocab - n_special), abs=0.01)
    assert (inputs[picked] >= n_special).logical_or(inputs[picked] == mask_id).all()
    # Same generator seed, same masking.
    again = mask_tokens(ids, maskable, mask_id, n_special, vocab, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_collate_wraps_and_pads():
    ids, mask = collate([[7, 8, 9], [5]], bos=0, eos=2, pad=1)
    assert ids.tolist() == [[0, 7, 8, 9, 2], [0, 5, 2, 1, 1]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_warmup_cosine_closed_form():
    total = 100  # 5 warm-up steps
    assert [warmup_cosine(s, total) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert warmup_cosine(5, total) == pytest.approx(1.0)
    assert warmup_cosine(5 + 95 // 2, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 47 / 95)))
    assert warmup_cosine(total, total) == pytest.approx(0.0, abs=1e-12)


LINES = [
    f"a {c} {s} is {r} of a {c2} {s2}"
    for c in ("red", "blue", "green")
    for s in ("circle", "square")
    for r in ("left", "right")
    for c2 in ("yellow", "purple")
    for s2 in ("cross", "triangle")
]


@pytest.fixture(scope="module")
def small():
    cfg = PretrainConfig(
        width=32, layers=1, heads=2, ffn=64, text={"steps": 40, "batch_size": 16, "lr": 3e-3}
    )
    base = train_word_tokenizer(LINES)
    return cfg, base


def test_mlm_learns_and_reports(small):
    cfg, base = small
    tok = wrap_tokenizer(base, "roberta")
    ids = encode_lines(LINES, tok, cfg.text.max_positions)
    torch.manual_seed(0)
    model = build_roberta(cfg, tok)
    assert model.config.max_position_embeddings == cfg.text.max_positions + tok.pad_token_id + 1
    m = pretrain_mlm(model, tok, ids, ids, cfg, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(m) == {"train_loss", "val_loss", "val_masked_accuracy"}
    # Uniform guessing over the vocabulary would be log(V) ≈ 2.9 and accuracy ≈ 1/V.
    assert m["val_loss"] < 0.7 * math.log(len(tok))
    assert m["val_masked_accuracy"] > 0.3


def test_clm_learns_and_reports(small):
    cfg, base = small
    tok = wrap_tokenizer(base, "gpt2")
    ids = encode_lines(LINES, tok, cfg.text.max_positions)
    torch.manual_seed(0)
    model = build_gpt2(cfg, tok)
    assert (model.config.bos_token_id, model.config.eos_token_id) == (tok.bos_token_id, tok.eos_token_id)
    m = pretrain_clm(model, tok, ids, ids, cfg, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(m) == {"train_loss", "val_loss", "val_token_accuracy"}
    assert m["val_loss"] < 0.6 * math.log(len(tok))
    # Independent check of the reported loss: transformers' own shifted CE on the same batch.
    batch, mask = collate(ids, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    with torch.no_grad():
        ref = model(input_ids=batch, attention_mask=mask, labels=batch.masked_fill(mask == 0, IGNORE)).loss
    assert m["val_loss"] == pytest.approx(ref.item(), rel=1e-4)


def test_infill_spans_masks_about_the_ratio_with_one_token_per_span():
    g = torch.Generator().manual_seed(0)
    seq = list(range(10, 210))
    noisy = infill_spans(seq, mask_id=4, generator=g)
    kept = [t for t in noisy if t != 4]
    assert kept == [t for t in seq if t in set(kept)]  # order kept, nothing invented
    dropped = len(seq) - len(kept)
    assert 0.15 * len(seq) <= dropped <= 0.3 * len(seq)  # the 30 % budget is never exceeded
    assert noisy.count(4) < dropped  # spans longer than one token collapse into one mask


def test_bart_denoising_learns_and_saves_like_a_hub_model(small, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    cfg, base = small
    tok = wrap_tokenizer(base, "roberta")
    ids = encode_lines(LINES, tok, cfg.text.max_positions)
    torch.manual_seed(0)
    model = build_bart(cfg.model_copy(update={"text": cfg.text.model_copy(update={"steps": 80})}), tok)
    assert model.config.decoder_start_token_id == tok.eos_token_id
    cfg80 = cfg.model_copy(update={"text": cfg.text.model_copy(update={"steps": 80})})
    m = pretrain_denoise(model, tok, ids, ids, cfg80, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(m) == {"train_loss", "val_loss", "val_token_accuracy"}
    assert m["val_loss"] < 0.6 * math.log(len(tok))
    model.save_pretrained(tmp_path / "bart")
    tok.save_pretrained(tmp_path / "bart")
    again = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "bart")
    assert again.config.model_type == "bart"
