"""apply_peft / visual_context basics: routing none is peft's LoRA, routed layers need a visual context."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tuner_helpers import VOCAB, WIDTH, randomize_lora_b, tiny_gpt2, tiny_roberta

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError
from vlpeft.tuners import RoutedLoraLinear, apply_peft, trainable_names, visual_context

IDS = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))


def test_routing_none_is_bit_identical_to_peft_lora():
    cfg = PeftConfig(method="lora", rank=4, alpha=8, routing="none")
    torch.manual_seed(5)
    ours = apply_peft(tiny_roberta(), cfg, "roberta")
    torch.manual_seed(5)
    ref = get_peft_model(tiny_roberta(), LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    randomize_lora_b(ours)
    randomize_lora_b(ref)
    assert not any(isinstance(m, RoutedLoraLinear) for m in ours.modules())
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(ours(input_ids=IDS).last_hidden_state, ref(input_ids=IDS).last_hidden_state)


@pytest.mark.parametrize("family,build", [("roberta", tiny_roberta), ("gpt2", tiny_gpt2)])
def test_routed_layers_installed_and_need_visual_context(family, build):
    model = apply_peft(build(), PeftConfig(method="lora", rank=4, routing="vl"), family)
    routed = [m for m in model.modules() if isinstance(m, RoutedLoraLinear)]
    assert len(routed) == (4 if family == "roberta" else 2)
    with pytest.raises(RuntimeError, match="visual_context"):
        model(input_ids=IDS)
    with visual_context(torch.randn(3, 1, WIDTH)):
        out = model(input_ids=IDS)
    assert torch.isfinite(out[0]).all()
    assert all(("lora_" in n) or ("LayerNorm" in n) or ("ln_" in n) for n in trainable_names(model))


def test_unknown_family_without_targets_is_config_error():
    with pytest.raises(ConfigError, match="family 'nope'"):
        apply_peft(tiny_roberta(), PeftConfig(method="lora"), "nope")


def test_peft_config_errors_name_key_and_allowed_values():
    from vlpeft.config import params_from_dict

    with pytest.raises(ConfigError, match=r"vqa\.peft\.routing.*'none', 'add', 'mul', 'mul_expand', 'vl'"):
        params_from_dict({"vqa": {"peft": {"routing": "gate"}}}, "params.yaml")
    with pytest.raises(ConfigError, match=r"caption\.peft\.adapter\.skipp: unknown key"):
        params_from_dict({"caption": {"peft": {"adapter": {"skipp": True}}}}, "params.yaml")
    with pytest.raises(ConfigError, match=r"vqa\.peft\.rank"):
        params_from_dict({"vqa": {"peft": {"rank": 0}}}, "params.yaml")
