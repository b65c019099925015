"""Encoder-decoder (BART) VL model: text then visual tokens in the encoder, teacher forcing, generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from vl_helpers import peft, randomize_peft

from vlpeft.models import build_vl_model
from vlpeft.models.generative import pack_visual


def test_pack_visual_puts_each_image_right_after_its_own_text():
    text = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1) + 1  # values 1..8
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    visual = -torch.arange(2 * 2 * 1, dtype=torch.float).view(2, 2, 1) - 1  # values -1..-4
    packed, joint = pack_visual(text, mask, visual)
    assert packed.squeeze(-1).tolist() == [[1, 2, 3, 4, -1, -2], [5, 6, -3, -4, 7, 8]]
    assert joint.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]


def test_task_prefix_and_targets(model_cfg):
    model = build_vl_model("generative", model_cfg, peft())
    tok = model.tokenizer
    enc = model.encode_texts(["what color ?"], task="vqa")
    ids = tok.convert_tokens_to_ids(["vqa", ":", "what", "color", "?"])
    assert enc["input_ids"][0].tolist() == [tok.bos_token_id, *ids, tok.eos_token_id]
    cap = model.encode_texts([""], task="caption")["input_ids"][0].tolist()
    assert cap == [tok.bos_token_id, *tok.convert_tokens_to_ids(["caption", ":"]), tok.eos_token_id]
    labels = model.encode_targets(["yes", "red circle"])
    assert labels.tolist() == [
        [tok.convert_tokens_to_ids("yes"), tok.eos_token_id, -100],
        [*tok.convert_tokens_to_ids(["red", "circle"]), tok.eos_token_id],
    ]


def _model(model_cfg, backbones, family, **kw):
    cfg = model_cfg.model_copy(update={"generative_backbone": backbones[family]})
    model = build_vl_model("generative", cfg, peft(**kw)).eval()
    assert model.family == family
    return model


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_loss_is_teacher_forced_cross_entropy_and_padding_does_not_move_the_image(
    model_cfg, backbones, family
):
    model = _model(model_cfg, backbones, family, routing="vl")
    randomize_peft(model)
    visual = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    enc = model.encode_texts(["is there a red circle in the image ?", "what shape ?"], task="vqa")
    labels = model.encode_targets(["yes", "red circle"])
    out = model(**enc, labels=labels, visual=visual)
    assert out.logits.shape == (2, labels.shape[1], len(model.tokenizer))
    flat = F.cross_entropy(
        out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, flat)
    # the short question alone (no padding) gives the same logits as inside the padded batch
    alone = model.encode_texts(["what shape ?"], task="vqa")
    single = model(**alone, labels=labels[1:], visual=visual[1:]).logits
    torch.testing.assert_close(single, out.logits[1:], rtol=1e-4, atol=1e-5)
    # the image matters (prefix + routing)
    other = model(**enc, labels=labels, visual=visual.flip(0)).logits
    assert not torch.allclose(other, out.logits)


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_generation_greedy_and_beam_with_routing(model_cfg, backbones, family):
    model = _model(model_cfg, backbones, family, routing="vl")
    randomize_peft(model, seed=1)
    visual = torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(2))
    greedy = model.generate(visual, max_new_tokens=4)
    beam = model.generate(visual, max_new_tokens=4, num_beams=3)
    answers = model.answer(["what color ?", "is there a circle ?", "how many ?"], visual, max_new_tokens=3)
    assert len(greedy) == len(beam) == len(answers) == 3
    assert all(isinstance(s, str) for s in greedy + beam + answers)
    # greedy decoding = argmax of teacher forcing on its own output
    out = model.generate_ids(visual, max_new_tokens=4)
    seq = out.sequences[:, 1:]  # drop the decoder start token
    enc = model.encode_texts([""] * 3, task="caption")
    logits = model(**enc, labels=seq, visual=visual).logits
    is_eos = (seq == model.eos_id).long()
    keep = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first EOS
    assert torch.equal(logits.argmax(-1)[keep], seq[keep])
