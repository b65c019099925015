"""The method registry: names, refusals, config sections and method lists derived from it, old saves."""

from __future__ import annotations

import json
import re

import pytest
import torch
from pydantic import ValidationError
from tuner_helpers import VOCAB, tiny_roberta

from vlpeft.config import PeftConfig, params_from_dict
from vlpeft.errors import ConfigError
from vlpeft.tuners import apply_peft, load_peft, save_peft
from vlpeft.tuners.registry import MethodSpec, get_method, list_methods, register_method

IDS = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))


def test_builtin_methods_are_registered_with_their_capabilities():
    assert list_methods()[:4] == ["lora", "adapter", "full", "frozen"]
    assert {"lora", "adapter"} <= set(list_methods(bottleneck=True))
    assert "full" not in list_methods(bottleneck=True)
    assert get_method("adapter").options is PeftConfig.model_fields["adapter"].annotation


def test_register_refuses_duplicates_and_bad_names():
    with pytest.raises(KeyError, match="already registered"):
        register_method(MethodSpec(name="lora", implementation="x:y"))
    with pytest.raises(ValueError, match="lower-case"):
        register_method(MethodSpec(name="LoRA2", implementation="x:y"))
    with pytest.raises(KeyError, match="not registered"):
        get_method("nope")


def test_config_method_lists_come_from_the_registry():
    names = [repr(m) for m in list_methods()]
    allowed = re.escape(", ".join(names[:-1]) + " or " + names[-1])
    with pytest.raises(ConfigError, match=rf"vqa\.peft\.method: Input should be {allowed}"):
        params_from_dict({"vqa": {"peft": {"method": "nope"}}}, "params.yaml")
    with pytest.raises(ConfigError, match=r"model\.vision_tower"):
        params_from_dict({"model": {"vision_tower": "nope"}}, "params.yaml")
    with pytest.raises(ConfigError, match=r"sweep\.method"):
        params_from_dict({"sweep": {"method": ["full"]}}, "params.yaml")  # no rank to search
    assert params_from_dict({"sweep": {"method": ["lora", "adapter"]}}).sweep.method == ["lora", "adapter"]


def test_options_is_the_chosen_methods_section():
    cfg = PeftConfig(method="adapter", adapter={"skip": False})
    assert cfg.options is cfg.adapter and cfg.options.skip is False
    assert PeftConfig(method="full").options is None


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_saves_from_before_the_registry_load(tmp_path, method):
    """A settings file written before layernorm_scope / fused_qkv existed still loads, as it was trained."""
    model = apply_peft(tiny_roberta(), PeftConfig(method=method, rank=4), "roberta").eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
        want = model(input_ids=IDS)[0]
    save_peft(model, tmp_path / "peft")
    state_file = tmp_path / "peft" / "vlpeft_peft.json"
    state = json.loads(state_file.read_text())
    for key in ("layernorm_scope", "fused_qkv"):
        del state["peft"][key]
    state_file.write_text(json.dumps(state))
    loaded = load_peft(tiny_roberta(), tmp_path / "peft").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS)[0], want, rtol=0, atol=0)


def test_layernorm_scope_all_includes_the_embedding_norm():
    blocks = apply_peft(tiny_roberta(), PeftConfig(method="adapter", rank=4), "roberta")
    every = apply_peft(tiny_roberta(), PeftConfig(method="adapter", rank=4, layernorm_scope="all"), "roberta")
    names_blocks = {n for n, p in blocks.named_parameters() if p.requires_grad}
    names_all = {n for n, p in every.named_parameters() if p.requires_grad}
    assert names_all - names_blocks == {"embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"}


def test_routing_without_a_bottleneck_is_refused():
    with pytest.raises(ValidationError, match=r"routing=vl needs method lora or adapter.*no bottleneck"):
        PeftConfig(method="frozen", routing="vl")  # refused when params load (vlpeft.config)
    frozen = PeftConfig(method="frozen")
    object.__setattr__(frozen, "routing", "vl")  # past validation: apply_peft refuses it too
    with pytest.raises(ConfigError, match=r"routing=vl needs method lora or adapter.*no bottleneck"):
        apply_peft(tiny_roberta(), frozen, "roberta")
