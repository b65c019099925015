"""Prompt tuning on the encoder input: equals peft's PromptTuningConfig; the MLP formula; refusals."""

from __future__ import annotations

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model
from pydantic import ValidationError

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError
from vlpeft.models import build_vl_model
from vlpeft.models.backbones import load_language_backbone
from vlpeft.models.generative import pack_visual
from vlpeft.tuners import apply_peft, trainable_names

WIDTH = 16  # the tiny backbones of tests/models/conftest.py


def _batch(model):
    enc = model.encode_texts(["what colour is it", "how many"], task="vqa")
    labels = model.encode_targets(["red", "two"])
    visual = torch.randn(2, 1, WIDTH, generator=torch.Generator().manual_seed(3))
    return enc["input_ids"], enc["attention_mask"], visual, labels


def test_prompt_without_reparametrisation_equals_peft_prompt_tuning(model_cfg, backbones):
    length = 5
    cfg = PeftConfig(method="prompt", train_layernorm=False, prompt={"length": length, "reparam": "none"})
    model = build_vl_model("generative", model_cfg, cfg).eval()
    with torch.no_grad():
        model.hf.vlpeft_prompt.embedding.weight.normal_(generator=torch.Generator().manual_seed(1))
    ids, mask, visual, labels = _batch(model)
    ours = model(ids, mask, visual=visual, labels=labels)

    base = load_language_backbone("generative", backbones["bart"]).eval()
    ref = get_peft_model(
        base,
        PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=length, num_transformer_submodules=1),
    ).eval()
    with torch.no_grad():
        ref.prompt_encoder["default"].embedding.weight.copy_(model.hf.vlpeft_prompt.embedding.weight)
        packed, joint = pack_visual(base.get_encoder().embed_tokens(ids), mask, visual)  # our text+image
        want = ref(inputs_embeds=packed, attention_mask=joint, labels=labels)
    torch.testing.assert_close(ours.logits, want.logits, rtol=0, atol=0)
    torch.testing.assert_close(ours.loss, want.loss, rtol=0, atol=0)
    assert trainable_names(model.lm) == ["vlpeft_prompt.embedding.weight"]


def test_reparametrised_prompt_is_the_tanh_mlp_of_the_table(model_cfg):
    cfg = PeftConfig(method="prompt", prompt={"length": 4, "mid_dim": 7})
    prompt = build_vl_model("generative", model_cfg, cfg).hf.vlpeft_prompt
    e = prompt.embedding.weight
    lin1, lin2 = prompt.mlp[0], prompt.mlp[2]
    want = torch.tanh(e @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    torch.testing.assert_close(prompt(3), want.expand(3, -1, -1))
    n = 4 * WIDTH + (WIDTH * 7 + 7) + (7 * WIDTH + WIDTH)
    assert sum(p.numel() for p in prompt.parameters()) == n


def test_prompt_changes_the_encoder_length_and_generation_works(model_cfg):
    model = build_vl_model("generative", model_cfg, PeftConfig(method="prompt", prompt={"length": 3})).eval()
    ids, mask, visual, _ = _batch(model)
    embeds, joint = model.encoder_inputs(ids, mask, model.encode_visual(visual))
    assert embeds.shape[1] == ids.shape[1] + 3 + 1 and joint[:, :3].eq(1).all()
    out = model.generate_ids(visual=visual, max_new_tokens=3)
    assert out.sequences.shape[0] == 2


def test_prompt_refuses_routing_and_families_without_an_encoder_input_hook(backbones):
    with pytest.raises(ValidationError, match=r"routing=vl needs method .*got prompt"):
        PeftConfig(method="prompt", routing="vl")  # refused when params load (vlpeft.config)
    roberta = load_language_backbone("vqa", backbones["roberta"])
    with pytest.raises(ConfigError, match="prompt does not support model family 'roberta'"):
        apply_peft(roberta, PeftConfig(method="prompt"), "roberta")
