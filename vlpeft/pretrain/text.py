"""Text-only pretraining of the tiny language backbones: RoBERTa-style masked LM, GPT-2-style causal LM,
and a BART-style encoder-decoder trained by text denoising (span infilling) for the generative setting.

Sequences are ``<s> words </s>`` for both (the tokenizer's own specials), right-padded per batch. The loops
are deliberately plain: a fixed number of steps over shuffled lines, AdamW with warm-up + cosine, and one
validation pass at the end whose numbers go to the metrics file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

from vlpeft.config import PretrainConfig
from vlpeft.pretrain.common import make_optimizer
from vlpeft.pretrain.tokenizer import SPECIAL_TOKENS

IGNORE = -100


def encode_lines(lines: Sequence[str], tokenizer: PreTrainedTokenizerFast, max_len: int) -> list[list[int]]:
    """Word ids of each line (no specials), truncated so ``<s> … </s>`` fits in ``max_len``."""
    ids = tokenizer(list(lines), add_special_tokens=False)["input_ids"]
    return [seq[: max_len - 2] for seq in ids if seq]


def collate(seqs: Sequence[list[int]], bos: int, eos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``<s> seq </s>`` for each sequence, right-padded: ``(input_ids, attention_mask)``, both (B, T)."""
    length = max(len(s) for s in seqs) + 2
    input_ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, seq in enumerate(seqs):
        row = [bos, *seq, eos]
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_id: int,
    n_special: int,
    vocab_size: int,
    generator: torch.Generator,
    prob: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``prob`` of maskable positions; of those 80 % → mask, 10 % → random, 10 % kept.

    Returns ``(inputs, labels)`` with ``labels`` = original id at picked positions, ``-100`` elsewhere.
    Random replacements are drawn from the non-special vocabulary (ids ``n_special … vocab_size-1``).
    """
    u = torch.rand(input_ids.shape, generator=generator)
    picked = (u < prob) & maskable
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE))
    action = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[picked & (action < 0.8)] = mask_id
    rand_pos = picked & (action >= 0.8) & (action < 0.9)
    random_words = torch.randint(n_special, vocab_size, input_ids.shape, generator=generator)
    inputs[rand_pos] = random_words[rand_pos]
    return inputs, labels


def build_roberta(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> RobertaForMaskedLM:
    """A fresh RoBERTa MLM of the configured width; positions offset by ``pad+1`` as RoBERTa does."""
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.width,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn,
        max_position_embeddings=cfg.text.max_positions + tokenizer.pad_token_id + 1,
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return RobertaForMaskedLM(config)


def build_gpt2(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A fresh GPT-2 causal LM of the configured width with our tokenizer's special ids."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=cfg.width,
        n_layer=cfg.layers,
        n_head=cfg.heads,
        n_inner=cfg.ffn,
        n_positions=cfg.text.max_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, labels


def _run_steps(
    model: torch.nn.Module,
    train: Sequence[list[int]],
    make_batch: Callable[[Sequence[list[int]]], Batch],
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
    desc: str,
) -> float:
    """``cfg.text.steps`` AdamW steps over shuffled batches; returns the mean loss of the last 10 %."""
    steps, bs = cfg.text.steps, min(cfg.text.batch_size, len(train))
    opt, sched = make_optimizer(model, cfg.text.lr, 0.01, steps)
    model.to(device).train()
    order, pos, tail = torch.randperm(len(train), generator=generator), 0, []
    for step in tqdm(range(steps), desc=desc, unit="step", mininterval=1.0):
        if pos + bs > len(order):
            order, pos = torch.randperm(len(train), generator=generator), 0
        ids, mask, labels = make_batch([train[i] for i in order[pos : pos + bs].tolist()])
        pos += bs
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step >= steps - max(1, steps // 10):
            tail.append(loss.item())
    return sum(tail) / len(tail)


@torch.inference_mode()
def _evaluate(
    model: torch.nn.Module,
    val: Sequence[list[int]],
    make_batch: Callable[[Sequence[list[int]]], Batch],
    device: torch.device,
    shift: bool,
    batch_size: int = 256,
    decoder_labels: bool = False,
) -> tuple[float, float]:
    """Token-weighted mean cross-entropy and accuracy over the labelled positions of ``val``
    (``decoder_labels``: an encoder-decoder, whose decoder inputs come from the labels)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, len(val), batch_size):
        ids, mask, labels = make_batch(val[start : start + batch_size])
        labels = labels.to(device)
        extra = {"labels": labels} if decoder_labels else {}
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits.float()
        if shift:  # causal LM: position t predicts token t+1
            logits, labels = logits[:, :-1], labels[:, 1:]
        keep = labels != IGNORE
        total_loss += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
        correct += (logits[keep].argmax(-1) == labels[keep]).sum().item()
        count += int(keep.sum())
    return total_loss / max(1, count), correct / max(1, count)


def pretrain_mlm(
    model: RobertaForMaskedLM,
    tokenizer: PreTrainedTokenizerFast,
    train: Sequence[list[int]],
    val: Sequence[list[int]],
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """Masked-LM pretraining (15 %, 80/10/10); returns train/val loss and masked-token accuracy."""
    tk = tokenizer
    n_special = len(SPECIAL_TOKENS)

    def batch_with(gen: torch.Generator) -> Callable[[Sequence[list[int]]], Batch]:
        def make(seqs: Sequence[list[int]]) -> Batch:
            ids, mask = collate(seqs, tk.bos_token_id, tk.eos_token_id, tk.pad_token_id)
            maskable = (ids >= n_special) & mask.bool()
            inputs, labels = mask_tokens(ids, maskable, tk.mask_token_id, n_special, len(tk), gen)
            return inputs, mask, labels

        return make

    train_loss = _run_steps(model, train, batch_with(generator), cfg, generator, device, "roberta mlm")
    # A fixed masking of the validation lines, so the figure is comparable between runs.
    val_loss, val_acc = _evaluate(model, val, batch_with(torch.Generator().manual_seed(0)), device, False)
    return {"train_loss": train_loss, "val_loss": val_loss, "val_masked_accuracy": val_acc}


def pretrain_clm(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    train: Sequence[list[int]],
    val: Sequence[list[int]],
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """Causal-LM pretraining on ``<s> words </s>``; returns train/val loss and next-token accuracy."""
    tk = tokenizer

    def make(seqs: Sequence[list[int]]) -> Batch:
        ids, mask = collate(seqs, tk.bos_token_id, tk.eos_token_id, tk.pad_token_id)
        return ids, mask, ids.masked_fill(mask == 0, IGNORE)

    train_loss = _run_steps(model, train, make, cfg, generator, device, "gpt2 clm")
    val_loss, val_acc = _evaluate(model, val, make, device, True)
    return {"train_loss": train_loss, "val_loss": val_loss, "val_token_accuracy": val_acc}


# Learned positions of the tiny BART: text plus the visual tokens packed behind it (up to two images of
# patch tokens for NLVR2), so more rows than the pretraining text needs.
BART_POSITIONS = 128


def build_bart(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> BartForConditionalGeneration:
    """A fresh BART of the configured width, ``layers // 2`` encoder and decoder layers each (about the
    compute of the other tiny LMs), decoder start = EOS as in ``facebook/bart-base``."""
    half = max(1, cfg.layers // 2)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=cfg.width,
        encoder_layers=half,
        decoder_layers=half,
        encoder_attention_heads=cfg.heads,
        decoder_attention_heads=cfg.heads,
        encoder_ffn_dim=cfg.ffn,
        decoder_ffn_dim=cfg.ffn,
        max_position_embeddings=max(BART_POSITIONS, cfg.text.max_positions),
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def infill_spans(
    seq: Sequence[int], mask_id: int, generator: torch.Generator, ratio: float = 0.3, mean_span: float = 3.0
) -> list[int]:
    """BART text infilling: spans (Poisson(``mean_span``) lengths, at least 1) covering about ``ratio`` of
    the tokens are each replaced by one ``mask_id``."""
    out: list[int] = []
    budget = max(1, round(ratio * len(seq)))
    i = 0
    starts = torch.rand(len(seq), generator=generator)
    lengths = torch.poisson(torch.full((len(seq),), mean_span), generator=generator).long().clamp(min=1)
    # Plain Python numbers for the loop: indexing tensors element by element cost about a third of each
    # denoising step. The threshold is rounded to the draws' dtype, as the tensor comparison did.
    threshold = torch.tensor(ratio / mean_span, dtype=starts.dtype).item()
    starts_list, lengths_list = starts.tolist(), lengths.tolist()
    while i < len(seq):
        if budget > 0 and starts_list[i] < threshold:
            span = min(lengths_list[i], budget, len(seq) - i)
            out.append(mask_id)
            budget -= span
            i += span
        else:
            out.append(seq[i])
            i += 1
    return out


def pretrain_denoise(
    model: BartForConditionalGeneration,
    tokenizer: PreTrainedTokenizerFast,
    train: Sequence[list[int]],
    val: Sequence[list[int]],
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """Denoising pretraining: encoder ``<s> corrupted </s>`` -> decoder ``words </s>`` (the target format of
    the VL fine-tuning, which has no BOS); returns train/val loss and target-token accuracy."""
    tk = tokenizer

    def batch_with(gen: torch.Generator) -> Callable[[Sequence[list[int]]], Batch]:
        def make(seqs: Sequence[list[int]]) -> Batch:
            noisy = [infill_spans(s, tk.mask_token_id, gen) for s in seqs]
            ids, mask = collate(noisy, tk.bos_token_id, tk.eos_token_id, tk.pad_token_id)
            length = max(len(s) for s in seqs) + 1
            labels = torch.full((len(seqs), length), IGNORE, dtype=torch.long)
            for i, seq in enumerate(seqs):
                labels[i, : len(seq) + 1] = torch.tensor([*seq, tk.eos_token_id])
            return ids, mask, labels

        return make

    train_loss = _run_steps(model, train, batch_with(generator), cfg, generator, device, "bart denoise")
    fixed = batch_with(torch.Generator().manual_seed(0))  # fixed corruption of the validation lines
    val_loss, val_acc = _evaluate(model, val, fixed, device, False, decoder_labels=True)
    return {"train_loss": train_loss, "val_loss": val_loss, "val_token_accuracy": val_acc}
