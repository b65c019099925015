"""save_peft → load_peft gives identical outputs; routed adapters always come back routed."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from tuner_helpers import VOCAB, WIDTH, randomize_lora_b, tiny_gpt2, tiny_roberta

from vlpeft.config import PeftConfig
from vlpeft.errors import DataError
from vlpeft.tuners import RoutedLoraLinear, apply_peft, load_peft, save_peft, trainable_names, visual_context
from vlpeft.tuners.lora.layer import lora_layers

IDS = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
X_V = torch.randn(2, 1, WIDTH, generator=torch.Generator().manual_seed(1))


def _perturb_trainables(model: torch.nn.Module) -> None:
    """Move every trainable tensor away from its init so a load that misses any of them shows."""
    randomize_lora_b(model)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and "lora_B" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def _out(model: torch.nn.Module) -> torch.Tensor:
    with visual_context(X_V), torch.no_grad():
        return model(input_ids=IDS)[0]


CASES = [
    ("roberta", tiny_roberta, PeftConfig(method="lora", rank=4, routing="none")),
    ("roberta", tiny_roberta, PeftConfig(method="lora", rank=4, routing="vl", dropout=0.1)),
    ("gpt2", tiny_gpt2, PeftConfig(method="lora", rank=4, routing="mul_expand")),
    ("roberta", tiny_roberta, PeftConfig(method="adapter", rank=4, routing="vl_relu")),
    ("gpt2", tiny_gpt2, PeftConfig(method="adapter", rank=4, routing="add")),
    ("roberta", tiny_roberta, PeftConfig(method="full")),
    ("roberta", tiny_roberta, PeftConfig(method="frozen")),
    ("gpt2", tiny_gpt2, PeftConfig(method="lora", rank=4, routing="vl", bias="lora_only")),
    ("roberta", tiny_roberta, PeftConfig(method="adapter", rank=4, routing="mul", bias="all")),
]


@pytest.mark.parametrize("family,build,cfg", CASES, ids=lambda c: getattr(c, "method", None) or str(c))
def test_save_load_identical_outputs(tmp_path, family, build, cfg):
    model = apply_peft(build(seed=0), cfg, family)
    _perturb_trainables(model)
    model.eval()
    want = _out(model)
    save_peft(model, tmp_path / "peft")
    state = json.loads((tmp_path / "peft" / "vlpeft_peft.json").read_text())
    assert state["peft"]["routing"] == cfg.routing and state["method"] == cfg.method
    if cfg.method == "lora":
        assert (tmp_path / "peft" / "adapter_config.json").is_file()
        assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    loaded = load_peft(build(seed=0), tmp_path / "peft").eval()
    torch.testing.assert_close(_out(loaded), want, rtol=0, atol=0)
    assert trainable_names(loaded) == []
    if cfg.method == "lora":
        layers = lora_layers(loaded)
        assert layers and all(isinstance(m, RoutedLoraLinear) is (cfg.routing != "none") for _, m in layers)


def test_load_trainable_restores_the_trainable_set(tmp_path):
    model = apply_peft(tiny_roberta(), PeftConfig(rank=4, routing="vl"), "roberta")
    save_peft(model, tmp_path / "peft")
    loaded = load_peft(tiny_roberta(), tmp_path / "peft", is_trainable=True)
    assert trainable_names(loaded) == trainable_names(model)
    save_peft(loaded, tmp_path / "again")  # a loaded model can be saved again
    assert (tmp_path / "again" / "vlpeft_peft.json").is_file()


def test_resaving_a_frozen_model_keeps_trained_layernorms(tmp_path):
    model = apply_peft(tiny_roberta(), PeftConfig(rank=4, routing="vl"), "roberta")
    _perturb_trainables(model)
    want = _out(model.eval())
    save_peft(model, tmp_path / "first")
    frozen = load_peft(tiny_roberta(), tmp_path / "first")  # nothing trainable now
    save_peft(frozen, tmp_path / "second")
    torch.testing.assert_close(
        _out(load_peft(tiny_roberta(), tmp_path / "second").eval()), want, rtol=0, atol=0
    )


def test_plain_peft_load_would_lose_routing_so_load_peft_is_required(tmp_path):
    """Documents pitfall 1 of env-notes §2: peft alone reloads a routed adapter as plain LoRA."""
    model = apply_peft(tiny_roberta(), PeftConfig(rank=4, routing="vl"), "roberta")
    save_peft(model, tmp_path / "peft")
    bare = PeftModel.from_pretrained(tiny_roberta(), str(tmp_path / "peft"))
    assert not any(isinstance(m, RoutedLoraLinear) for m in bare.modules())
    ours = load_peft(tiny_roberta(), tmp_path / "peft")
    assert any(isinstance(m, RoutedLoraLinear) for m in ours.modules())


def test_missing_or_foreign_settings_are_data_errors(tmp_path):
    model = apply_peft(tiny_roberta(), PeftConfig(rank=4, routing="vl"), "roberta")
    model.save_pretrained(str(tmp_path / "bare"))  # peft files only, no routing settings
    with pytest.raises(DataError, match=r"vlpeft_peft\.json"):
        load_peft(tiny_roberta(), tmp_path / "bare")
    (tmp_path / "bare" / "vlpeft_peft.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="not a vlpeft PEFT settings file"):
        load_peft(tiny_roberta(), tmp_path / "bare")


def test_save_refuses_unprepared_model(tmp_path):
    with pytest.raises(ValueError, match="apply_peft"):
        save_peft(tiny_roberta(), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_partial_adapter_file_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model = apply_peft(tiny_roberta(), PeftConfig(method="adapter", rank=4), "roberta")
    save_peft(model, tmp_path / "peft")
    path = tmp_path / "peft" / "vlpeft_adapter.safetensors"
    tensors = load_file(str(path))
    dropped = next(n for n in tensors if ".adapter.up.weight" in n)
    save_file({n: t for n, t in tensors.items() if n != dropped}, str(path))
    with pytest.raises(DataError, match="are missing"):
        load_peft(tiny_roberta(), tmp_path / "peft")


def test_dead_lora_is_detected():
    """Pitfall P10 guard: an all-zero LoRA A (skipped init) is an error, not a silently frozen model."""
    from vlpeft.tuners.lora.method import check_lora_alive as _check_lora_alive

    model = apply_peft(tiny_roberta(), PeftConfig(rank=4), "roberta")
    _check_lora_alive(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.zero_()
    with pytest.raises(RuntimeError, match="all zeros"):
        _check_lora_alive(model)
