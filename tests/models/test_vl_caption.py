"""GPT-2 captioner: the loss supervises every caption token (first and EOS) and no padding; beam search
returns exactly the sequences and scores that direct scoring gives, with routing and distinct images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from vl_helpers import peft, randomize_peft

from vlpeft.models import build_vl_model

CAPTIONS = ["a red circle", "two small blue square in the left of the image"]


def _visual(seed: int, b: int = 2, m: int = 1) -> torch.Tensor:
    return torch.randn(b, m, 16, generator=torch.Generator().manual_seed(seed))


def test_caption_encoding_ends_in_eos_and_masks_padding(model_cfg):
    model = build_vl_model("caption", model_cfg, peft())
    batch = model.encode_captions(CAPTIONS)
    tok = model.tokenizer
    first = [*tok.convert_tokens_to_ids(["a", "red", "circle"]), tok.eos_token_id]
    assert batch["input_ids"][0, :4].tolist() == first
    assert batch["labels"][0].tolist() == first + [-100] * (batch["labels"].shape[1] - 4)
    assert batch["labels"][1].tolist() == batch["input_ids"][1].tolist()  # the longest caption: no padding
    assert model.encode_captions(CAPTIONS, max_length=3)["input_ids"][1].tolist()[-1] == tok.eos_token_id


@pytest.mark.parametrize("m", [1, 3])
def test_loss_is_hand_computed_cross_entropy_incl_first_token_excl_padding(model_cfg, m):
    model = build_vl_model("caption", model_cfg, peft(routing="none")).eval()
    batch = model.encode_captions(CAPTIONS)
    visual = torch.randn(2, m, 16, generator=torch.Generator().manual_seed(0))
    out = model(**batch, visual=visual)
    assert out.logits.shape == (*batch["input_ids"].shape, len(model.tokenizer))
    # Independent reference: the HF model on [X_v (m tokens) ; words]; position m-1+t predicts token t.
    with torch.no_grad():
        words = model.hf.get_input_embeddings()(batch["input_ids"])
        mask = torch.cat([torch.ones(2, m, dtype=torch.long), batch["attention_mask"]], dim=1)
        ref = model.hf(inputs_embeds=torch.cat([visual, words], dim=1), attention_mask=mask).logits
        ref = ref[:, m - 1 :]
    logp = torch.log_softmax(ref, dim=-1)
    terms = []
    for i, n in enumerate(batch["attention_mask"].sum(dim=1).tolist()):
        for t in range(n):  # every caption token incl. the first (predicted at the prefix) and the EOS
            terms.append(-logp[i, t, batch["input_ids"][i, t]])
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    # padding is ignored: changing padded input tokens (masked, after EOS) does not change the loss
    noisy = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7)
    torch.testing.assert_close(model(**{**batch, "input_ids": noisy}, visual=visual).loss, out.loss)
    # the first token alone is a target: its loss is the prefix position's cross-entropy
    only_first = torch.full_like(batch["labels"], -100)
    only_first[:, 0] = batch["labels"][:, 0]
    first = model(**{**batch, "labels": only_first}, visual=visual).loss
    torch.testing.assert_close(first, F.cross_entropy(ref[:, 0], batch["input_ids"][:, 0]))


def test_gradients_reach_exactly_the_trainable_parameters(model_cfg):
    model = build_vl_model("caption", model_cfg, peft(routing="vl"))
    randomize_peft(model)
    model(**model.encode_captions(CAPTIONS), visual=_visual(1)).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name
    assert {n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad and "lora" in n} == {
        "default"
    }


@pytest.fixture
def routed_captioner(model_cfg):
    torch.manual_seed(0)
    model = build_vl_model("caption", model_cfg, peft(routing="vl"))
    randomize_peft(model, seed=3)
    return model.eval()


@pytest.mark.parametrize("m", [1, 3])
def test_beam_search_scores_equal_direct_scoring_with_routing(routed_captioner, m):
    """Every returned beam's score is the exact sum of log-probs of its tokens under its own image; the top
    beam is at least as likely as the greedy caption. Two different images make a mix-up visible."""
    model = routed_captioner
    visual = _visual(5, m=m)  # m visual tokens: prefix length m, routing over the token Gram matrix
    k = 3
    out = model.generate_ids(
        visual, max_new_tokens=6, num_beams=k, num_return_sequences=k, length_penalty=0.0
    )
    seqs, scores = out.sequences, out.sequences_scores
    assert seqs.shape[0] == 2 * k
    direct = model.score(seqs, visual=visual.repeat_interleave(k, dim=0))
    torch.testing.assert_close(scores, direct, rtol=1e-4, atol=1e-4)
    # scoring against the other image gives other numbers: the check above really tests image alignment
    swapped = model.score(seqs, visual=visual.flip(0).repeat_interleave(k, dim=0))
    assert not torch.allclose(swapped, direct, atol=1e-3)
    # beams come sorted, and the best beam beats (or ties) greedy decoding
    assert torch.all(scores.view(2, k)[:, :-1] >= scores.view(2, k)[:, 1:] - 1e-6)
    greedy = model.generate_ids(visual, max_new_tokens=6, num_beams=1).sequences
    assert torch.all(scores.view(2, k)[:, 0] >= model.score(greedy, visual=visual) - 1e-5)
    # generate() returns the top beam's text
    assert model.generate(visual, max_new_tokens=6, num_beams=k, length_penalty=0.0) == model.decode(
        seqs.view(2, k, -1)[:, 0]
    )


def test_greedy_generation_follows_the_argmax_of_forward(routed_captioner):
    model = routed_captioner
    visual = _visual(6)
    seqs = model.generate_ids(visual, max_new_tokens=5).sequences
    logits = model(seqs, visual=visual).logits  # logits[:, t] predicts token t from the prefix and tokens < t
    keep = model.until_eos(seqs)
    assert torch.equal(logits.argmax(-1)[keep], seqs[keep])


def test_gradient_checkpointing_gives_the_same_gradients_with_backward_outside(model_cfg):
    """A trainer calls backward() after the forward has left the visual context; recomputation must still
    see the image (routed layers)."""
    model = build_vl_model("caption", model_cfg, peft(routing="vl")).train()
    randomize_peft(model)
    batch = model.encode_captions(CAPTIONS)
    visual = _visual(8)

    def grads():
        model.zero_grad()
        model(**batch, visual=visual).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    model.gradient_checkpointing_enable()
    assert model.hf.is_gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_generation_longer_than_the_positions_is_refused(routed_captioner):
    with pytest.raises(ValueError, match="positions"):
        routed_captioner.generate(_visual(0), max_new_tokens=48)


def test_blind_captioner_starts_from_bos_and_writes_one_caption(model_cfg):
    cfg = model_cfg.model_copy(update={"visual_prefix": False})
    model = build_vl_model("caption", cfg, peft()).eval()
    caps = model.generate(batch_size=3, max_new_tokens=4)
    assert len(caps) == 3 and len(set(caps)) == 1
    batch = model.encode_captions(CAPTIONS)
    with torch.no_grad():
        ids = torch.cat([torch.full((2, 1), model.tokenizer.bos_token_id), batch["input_ids"]], dim=1)
        mask = torch.cat([torch.ones(2, 1, dtype=torch.long), batch["attention_mask"]], dim=1)
        ref = model.hf(input_ids=ids, attention_mask=mask).logits[:, :-1]
    torch.testing.assert_close(model(**batch).logits, ref)
