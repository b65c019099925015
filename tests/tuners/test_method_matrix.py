"""Every registered method on every tiny family it supports: training changes only its trainable set,
save → load gives identical outputs, merge rules hold (LoRA none merges, routed LoRA refuses)."""

from __future__ import annotations

import pytest
import torch
from tuner_helpers import VOCAB, WIDTH, tiny_bart, tiny_gpt2, tiny_roberta

from vlpeft.config import PeftConfig
from vlpeft.tuners import (
    RoutedMergeError,
    apply_peft,
    load_peft,
    save_peft,
    task_context,
    trainable_names,
    visual_context,
)
from vlpeft.tuners.prompt.encoder import prepend_prompt
from vlpeft.tuners.registry import get_method, list_methods

FAMILIES = {"roberta": tiny_roberta, "gpt2": tiny_gpt2, "bart": tiny_bart}
IDS = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
X_V = torch.randn(2, 1, WIDTH, generator=torch.Generator().manual_seed(1))
SMALL = {  # small settings for the tiny models (rank 4 everywhere)
    "hyperformer": {
        "tasks": ["vqa", "gqa"],
        "hyperformer": {"task_embedding_dim": 6, "task_hidden_dim": 5, "projected_dim": 3},
    },
    "prompt": {"prompt": {"length": 3, "mid_dim": 8}},
}
CASES = [
    (method, family)
    for method in list_methods()
    for family in FAMILIES
    if get_method(method).supports(family)
]


def _cfg(method: str) -> PeftConfig:
    routing = "mul" if get_method(method).bottleneck else "none"
    return PeftConfig(method=method, rank=4, routing=routing, **SMALL.get(method, {}))


def _forward(model: torch.nn.Module, family: str) -> torch.Tensor:
    """Output of ``model`` inside the visual and task contexts (BART: through the input-prompt hook)."""
    with visual_context(X_V), task_context("vqa"):
        if family == "bart":
            hf = model.get_base_model() if hasattr(model, "get_base_model") else model
            embeds, mask = prepend_prompt(hf, hf.get_encoder().embed_tokens(IDS), torch.ones_like(IDS))
            return model(inputs_embeds=embeds, attention_mask=mask, labels=IDS).logits
        return model(input_ids=IDS)[0]


def _perturb(model: torch.nn.Module) -> None:
    """Move every trainable tensor off its init (LoRA B / zero biases would hide a missed load)."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("method,family", CASES)
def test_training_changes_only_the_methods_trainable_set(method, family):
    model = apply_peft(FAMILIES[family](), _cfg(method), family)
    trainable = set(trainable_names(model))
    if method == "frozen":
        assert not trainable
        return
    assert trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    _perturb(model)  # zero-initialised halves (LoRA B, PHM biases) would block gradients to the other half
    for _ in range(3):
        opt.zero_grad()
        _forward(model, family).pow(2).mean().backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, sorted(changed - trainable)[:3]
    assert changed, "nothing trained"


@pytest.mark.parametrize("method,family", CASES)
def test_save_load_gives_identical_outputs(tmp_path, method, family):
    model = apply_peft(FAMILIES[family](seed=0), _cfg(method), family).eval()
    _perturb(model)
    want = _forward(model, family)
    save_peft(model, tmp_path / "peft")
    for name in get_method(method).state_files:
        if name != "extra_trainable.safetensors" or method != "lora":
            assert (tmp_path / "peft" / name).is_file() or method in ("frozen",), name
    loaded = load_peft(FAMILIES[family](seed=0), tmp_path / "peft").eval()
    torch.testing.assert_close(_forward(loaded, family), want, rtol=0, atol=0)
    assert trainable_names(loaded) == []
    again = load_peft(FAMILIES[family](seed=0), tmp_path / "peft", is_trainable=True)
    assert trainable_names(again) == trainable_names(model)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_merge_rules(family):
    plain = apply_peft(FAMILIES[family](), PeftConfig(method="lora", rank=4, fused_qkv="all"), family).eval()
    _perturb(plain)
    want = _forward(plain, family)
    merged = plain.merge_and_unload()
    torch.testing.assert_close(_forward(merged, family), want, rtol=1e-5, atol=1e-5)
    routed = apply_peft(FAMILIES[family](), PeftConfig(method="lora", rank=4, routing="vl"), family)
    with pytest.raises(RoutedMergeError):
        routed.merge_and_unload()


def test_every_method_is_in_the_matrix():
    assert {m for m, _ in CASES} == set(list_methods())
