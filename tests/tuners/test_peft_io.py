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


PLAIN_PEFT_CASES = [
    ("roberta", tiny_roberta, PeftConfig(method="lora", rank=4, routing="none")),
    ("roberta", tiny_roberta, PeftConfig(method="lora", rank=4, routing="none", bias="all")),
    ("roberta", tiny_roberta, PeftConfig(method="lora", rank=4, routing="none", layernorm_scope="all")),
    ("gpt2", tiny_gpt2, PeftConfig(method="lora", rank=4, routing="none", fused_qkv="all")),
]


@pytest.mark.parametrize("family,build,cfg", PLAIN_PEFT_CASES)
def test_plain_peft_loads_a_routing_none_adapter_with_identical_outputs(tmp_path, family, build, cfg):
    """Issue 22.1: bare ``peft.PeftModel.from_pretrained`` (no vlpeft code involved) gives the trained model's
    outputs exactly, trained LayerNorms included (peft's ``modules_to_save``)."""
    model = apply_peft(build(seed=0), cfg, family)
    _perturb_trainables(model)
    model.eval()
    want = _out(model)
    save_peft(model, tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["task_type"] is None and config["modules_to_save"]
    assert not (tmp_path / "peft" / "extra_trainable.safetensors").exists()
    bare = PeftModel.from_pretrained(build(seed=0), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        torch.testing.assert_close(bare(input_ids=IDS)[0], want, rtol=0, atol=0)
    untrained_norms = PeftModel.from_pretrained(build(seed=0), str(tmp_path / "peft")).eval()
    for module in untrained_norms.modules():  # the LayerNorms matter: without them the outputs differ
        if hasattr(module, "original_module"):  # peft's ModulesToSaveWrapper: back to the frozen LayerNorm
            module.enable_adapters(False)
    with torch.no_grad():
        assert not torch.equal(untrained_norms(input_ids=IDS)[0], want)
    card = (tmp_path / "peft" / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "routing `none`" in card


VLPEFT_ONLY_CASES = [
    ("roberta", tiny_roberta, PeftConfig(method="lora", rank=4, routing="vl"), "routing=vl"),
    ("gpt2", tiny_gpt2, PeftConfig(method="lora", rank=4, routing="mul"), "routing=mul"),
    ("gpt2", tiny_gpt2, PeftConfig(method="lora", rank=4, routing="none", fused_qkv="qv"), "fused QKV"),
]


@pytest.mark.parametrize("family,build,cfg,why", VLPEFT_ONLY_CASES, ids=lambda c: getattr(c, "routing", None))
def test_plain_peft_refuses_a_vlpeft_only_adapter_naming_vlpeft(tmp_path, family, build, cfg, why):
    """A routed (or sliced) adapter never loads in bare peft as plain LoRA: peft refuses it with our sentence;
    ``load_peft`` (the one-liner the message and the card give) loads it exactly."""
    model = apply_peft(build(seed=0), cfg, family)
    _perturb_trainables(model)
    model.eval()
    want = _out(model)
    save_peft(model, tmp_path / "peft")
    with pytest.raises(ValueError, match="VLPEFT-ONLY ADAPTER") as err:
        PeftModel.from_pretrained(build(seed=0), str(tmp_path / "peft"))
    assert why in str(err.value) and "from vlpeft.tuners import load_peft" in str(err.value)
    card = (tmp_path / "peft" / "README.md").read_text()
    assert "refuses it" in card and "load_peft(base_model, adapter_dir)" in card
    ours = load_peft(build(seed=0), tmp_path / "peft").eval()
    assert any(isinstance(m, RoutedLoraLinear) for m in ours.modules())
    torch.testing.assert_close(_out(ours), want, rtol=0, atol=0)


def test_plain_peft_refuses_every_adapter_of_a_per_task_save(tmp_path):
    cfg = PeftConfig(method="lora", rank=4, routing="none", sharing="per_task", tasks=["vqa", "caption"])
    save_peft(apply_peft(tiny_roberta(), cfg, "roberta"), tmp_path / "peft")
    for task in ("vqa", "caption"):
        with pytest.raises(ValueError, match=r"VLPEFT-ONLY ADAPTER.*per task"):
            PeftModel.from_pretrained(tiny_roberta(), str(tmp_path / "peft" / task))


@pytest.mark.parametrize("routing", ["none", "vl"])
def test_adapters_saved_before_modules_to_save_still_load(routing):
    """``fixtures/v1_lora_*``: saved by vlpeft at 41b0626 (LayerNorms in extra_trainable.safetensors, no
    marker) with the outputs that code computed; they load in today's vlpeft with the same outputs."""
    from pathlib import Path

    from safetensors.torch import load_file

    fixtures = Path(__file__).parent / "fixtures"
    expected = load_file(str(fixtures / f"v1_lora_{routing}_expected.safetensors"))
    loaded = load_peft(tiny_roberta(seed=0), fixtures / f"v1_lora_{routing}").eval()
    with visual_context(expected["x_v"]), torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=expected["ids"])[0], expected["out"], rtol=0, atol=0)


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
