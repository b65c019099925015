"""Word-level tokenizer for the embedded world's text corpus.

The synthetic text is templated with a vocabulary of a few dozen words, so a word-level model (lower-cased,
split on whitespace and punctuation) is exact and tiny. It is wrapped in ``PreTrainedTokenizerFast`` and
saved beside each text model, so later stages load it with ``AutoTokenizer.from_pretrained(dir)`` exactly
like a hub tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vlpeft.errors import DataError

# Hub-RoBERTa order and names: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4.
BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS: tuple[str, ...] = (BOS, PAD, EOS, UNK, MASK)


def train_word_tokenizer(lines: Iterable[str], min_frequency: int = 1) -> Tokenizer:
    """Train a lower-casing word-level ``tokenizers.Tokenizer`` on ``lines`` (specials first, fixed ids)."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        special_tokens=list(SPECIAL_TOKENS), min_frequency=min_frequency, show_progress=False
    )
    tok.train_from_iterator(lines, trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise DataError("tokenizer corpus: no words found (is the corpus empty?)")
    return tok


def wrap_tokenizer(tok: Tokenizer, style: Literal["roberta", "gpt2"]) -> PreTrainedTokenizerFast:
    """Wrap a trained tokenizer like the hub does for each family.

    ``roberta``: adds ``<s> … </s>`` (pairs ``<s> A </s></s> B </s>``) as RobertaTokenizer does.
    ``gpt2``: adds nothing, like the hub GPT-2 tokenizer; callers put ``<s>``/``</s>`` where they need them.
    Both have pad, bos (= cls), eos (= sep), mask and unk set.
    """
    tok = Tokenizer.from_str(tok.to_str())  # a copy: the post-processor differs per family
    if style == "roberta":
        tok.post_processor = processors.RobertaProcessing(
            (EOS, tok.token_to_id(EOS)),
            (BOS, tok.token_to_id(BOS)),
            add_prefix_space=False,
            trim_offsets=False,
        )
    elif style != "gpt2":
        raise ValueError(f"unknown tokenizer style {style!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        cls_token=BOS,
        sep_token=EOS,
        pad_token=PAD,
        mask_token=MASK,
        unk_token=UNK,
        model_max_length=512,
    )
