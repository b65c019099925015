"""The word-level tokenizer: exact round trip, hub-like special tokens, save/load through AutoTokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from vlpeft.errors import DataError
from vlpeft.pretrain.tokenizer import SPECIAL_TOKENS, train_word_tokenizer, wrap_tokenizer

LINES = [
    "a large green cross , a large red square and a small purple triangle",
    "four shapes : a green cross , a red square , a yellow cross and a purple triangle",
    "a yellow cross is above a green cross",
    "is there a red circle ? no",
    "how many shapes are there ? 3",
]


def test_round_trip_and_specials(tmp_path):
    base = train_word_tokenizer(LINES)
    vocab = base.get_vocab()
    # Specials first, with the hub-RoBERTa ids; every corpus word is in the vocabulary.
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert {w for line in LINES for w in line.split()} <= set(vocab)

    for style in ("roberta", "gpt2"):
        tok = wrap_tokenizer(base, style)
        tok.save_pretrained(tmp_path / style)
        loaded = AutoTokenizer.from_pretrained(tmp_path / style)
        for line in LINES:
            ids = loaded(line)["input_ids"]
            assert ids == tok(line)["input_ids"]
            assert loaded.decode(ids, skip_special_tokens=True) == line
        assert (loaded.bos_token, loaded.cls_token, loaded.eos_token, loaded.sep_token) == (
            "<s>",
            "<s>",
            "</s>",
            "</s>",
        )
        assert (loaded.pad_token_id, loaded.unk_token_id, loaded.mask_token_id) == (1, 3, 4)

    roberta = AutoTokenizer.from_pretrained(tmp_path / "roberta")
    gpt2 = AutoTokenizer.from_pretrained(tmp_path / "gpt2")
    words = [vocab["a"], vocab["red"], vocab["square"]]
    # RoBERTa wraps in <s> … </s> like the hub tokenizer; GPT-2 adds nothing, like the hub GPT-2 tokenizer.
    assert roberta("a red square")["input_ids"] == [0, *words, 2]
    assert gpt2("a red square")["input_ids"] == words
    # Lower-casing, punctuation split, and an unknown word -> <unk>.
    assert gpt2("A red zebra?")["input_ids"] == [vocab["a"], vocab["red"], 3, vocab["?"]]
    batch = roberta(["a red square", "a"], padding=True)
    assert batch["input_ids"][1] == [0, vocab["a"], 2, 1, 1]
    assert batch["attention_mask"][1] == [1, 1, 1, 0, 0]


def test_training_is_deterministic():
    assert train_word_tokenizer(LINES).get_vocab() == train_word_tokenizer(list(LINES)).get_vocab()


def test_empty_corpus_is_a_data_error():
    with pytest.raises(DataError, match="no words"):
        train_word_tokenizer(["", "   "])
