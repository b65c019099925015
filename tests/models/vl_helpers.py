"""Helpers shared by the VL model tests."""

from __future__ import annotations

import torch

from vlpeft.config import PeftConfig

TEXT = (
    "a an the red blue green yellow circle square triangle cross small large left right top bottom of is "
    "there what color colour shape how many in image one two three yes no vqa caption : ? ,"
)
WORDS = TEXT.split()
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
WIDTH = 16


def word_tokenizer():
    """A word-level fast tokenizer over the tiny world's words (pad, BOS, EOS, unk, mask specials)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )


def peft(**kw) -> PeftConfig:
    """A PeftConfig with test defaults (rank 4, alpha 4)."""
    return PeftConfig(**{"rank": 4, "alpha": 4.0, **kw})


def randomize_peft(model: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised LoRA B weights random values so PEFT layers change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
