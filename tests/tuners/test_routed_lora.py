"""Routed LoRA: the exact update, what the visual input changes, gradients, merging, checkpointing, beams."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from transformers import RobertaModel
from transformers.pytorch_utils import Conv1D
from tuner_helpers import VOCAB, WIDTH, randomize_lora_b, tiny_bart, tiny_gpt2, tiny_roberta

from vlpeft.config import PeftConfig
from vlpeft.routing import route
from vlpeft.tuners import (
    RoutedLoraLinear,
    RoutedMergeError,
    apply_peft,
    enable_gradient_checkpointing,
    trainable_names,
    visual_context,
)

ROUTED = ["add", "mul", "mul_expand", "vl", "vl_relu"]
IDS = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))
# LayerNorm outputs have a fixed mean square, so losses use a fixed random readout instead.
READOUT = torch.randn(3, 7, WIDTH, generator=torch.Generator().manual_seed(9))


def _loss(hidden: torch.Tensor) -> torch.Tensor:
    return (hidden * READOUT.to(hidden.dtype)).sum()


def _visual(b: int = 3, m: int = 1, seed: int = 3, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(b, m, WIDTH, generator=torch.Generator().manual_seed(seed)).to(dtype)


class Toy(nn.Module):
    """One projection, either an ``nn.Linear`` or GPT-2's ``Conv1D`` (weight stored (in, out))."""

    def __init__(self, conv1d: bool) -> None:
        super().__init__()
        self.proj = Conv1D(12, WIDTH) if conv1d else nn.Linear(WIDTH, 12)
        nn.init.normal_(self.proj.weight)
        nn.init.normal_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@pytest.mark.parametrize("conv1d", [False, True])
@pytest.mark.parametrize("kind", ROUTED)
@pytest.mark.parametrize("m", [1, 4])
def test_update_is_s_B_route_of_shared_A(conv1d, kind, m):
    torch.manual_seed(0)
    toy = Toy(conv1d).double()
    cfg = PeftConfig(method="lora", rank=4, alpha=6.0, routing=kind, target_modules=["proj"])
    model = apply_peft(toy, cfg, "gpt2" if conv1d else "toy")
    randomize_lora_b(model)
    layer = model.base_model.model.proj
    assert isinstance(layer, RoutedLoraLinear) and layer.fan_in_fan_out is conv1d
    x, x_v = torch.randn(2, 5, WIDTH, dtype=torch.float64), _visual(2, m, dtype=torch.float64)
    with visual_context(x_v):
        got = model(x)
    base = layer.base_layer
    wx = x @ base.weight + base.bias if conv1d else x @ base.weight.T + base.bias
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = wx + 1.5 * route(kind, x @ a.T, x_v @ a.T) @ b.T
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _pair(kind: str) -> tuple[nn.Module, nn.Module]:
    """A routed model and a plain-LoRA model with the same weights (float64)."""
    routed = apply_peft(tiny_roberta(dtype=torch.float64), PeftConfig(rank=4, routing=kind), "roberta")
    randomize_lora_b(routed)
    plain = apply_peft(tiny_roberta(dtype=torch.float64), PeftConfig(rank=4, routing="none"), "roberta")
    plain.load_state_dict(routed.state_dict())
    return routed, plain


@pytest.mark.parametrize("kind", ROUTED)
def test_output_changes_only_through_visual_input(kind):
    routed, plain = _pair(kind)
    lora_out = plain(input_ids=IDS).last_hidden_state
    with plain.disable_adapter():
        base_out = plain(input_ids=IDS).last_hidden_state
    zero = torch.zeros(3, 1, WIDTH, dtype=torch.float64)
    with visual_context(zero):
        out_zero = routed(input_ids=IDS).last_hidden_state
    # zero visual features: x_v = A·0 = 0, so add → plain LoRA, every multiplicative kind → no update
    torch.testing.assert_close(out_zero, lora_out if kind == "add" else base_out, rtol=1e-12, atol=1e-12)
    outs = []
    for seed in (1, 2):
        with visual_context(_visual(seed=seed, dtype=torch.float64)):
            outs.append(routed(input_ids=IDS).last_hidden_state)
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], lora_out)
    with routed.disable_adapter(), visual_context(_visual(dtype=torch.float64)):
        torch.testing.assert_close(routed(input_ids=IDS).last_hidden_state, base_out, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["none", "vl"])
def test_gradients_reach_exactly_the_trainable_parameters_and_visual(kind):
    model = apply_peft(tiny_roberta(), PeftConfig(rank=4, routing=kind, train_layernorm=True), "roberta")
    randomize_lora_b(model)
    expected = {
        n for n, _ in model.named_parameters() if "lora_" in n or ("LayerNorm" in n and ".layer." in n)
    }
    assert set(trainable_names(model)) == expected
    x_v = _visual().requires_grad_()
    with visual_context(x_v):
        _loss(model(input_ids=IDS).last_hidden_state).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == expected
    assert bool(x_v.grad is not None and x_v.grad.abs().sum() > 1e-3) is (kind != "none")


@pytest.mark.parametrize("kind", ["none", "mul"])
def test_bias_lora_only_trains_the_wrapped_layers_biases(kind):
    """The paper trains the bias of every LoRA-wrapped linear (paper-notes §A.7)."""
    cfg = PeftConfig(rank=4, routing=kind, bias="lora_only", train_layernorm=False)
    model = apply_peft(tiny_roberta(), cfg, "roberta")
    biases = [n for n in trainable_names(model) if "lora_" not in n]
    assert len(biases) == 4 and all(
        n.endswith(("query.base_layer.bias", "value.base_layer.bias")) for n in biases
    )


def test_frozen_layernorms_when_not_trained():
    model = apply_peft(tiny_roberta(), PeftConfig(rank=4, train_layernorm=False), "roberta")
    assert all(".lora_" in n for n in trainable_names(model))


def test_merging_routed_layer_is_refused_and_none_merges():
    routed, plain = _pair("vl")
    with pytest.raises(RoutedMergeError, match="depends on the image"):
        routed.merge_and_unload()
    want = plain(input_ids=IDS).last_hidden_state
    merged = plain.merge_and_unload()
    assert isinstance(merged, RobertaModel)
    torch.testing.assert_close(merged(input_ids=IDS).last_hidden_state, want, rtol=1e-10, atol=1e-10)


def test_lora_a_is_nonzero_after_from_pretrained(tmp_path):
    """Pitfall P10: recent transformers skip torch.nn.init inside from_pretrained; A must still be random."""
    tiny_roberta().save_pretrained(tmp_path / "base")
    base = RobertaModel.from_pretrained(tmp_path / "base", local_files_only=True)
    model = apply_peft(base, PeftConfig(rank=4, routing="vl"), "roberta")
    a_weights = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert a_weights and all(p.abs().sum() > 0 for p in a_weights)
    x_v = _visual()
    with visual_context(x_v):
        _loss(model(input_ids=IDS).last_hidden_state).backward()
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def _loss_and_grads(model: nn.Module, x_v: torch.Tensor, backward_inside: bool):
    with visual_context(x_v):
        loss = _loss(model(input_ids=IDS).last_hidden_state)
        if backward_inside:
            loss.backward()
    if not backward_inside:
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_matches_plain_backward():
    x_v = _visual()
    ref_model, _ = _pair("vl")
    ref_loss, ref_grads = _loss_and_grads(ref_model.train(), x_v, backward_inside=True)
    model, _ = _pair("vl")
    enable_gradient_checkpointing(model)
    model.train()
    assert model.get_base_model().encoder.layer[0].gradient_checkpointing
    # backward outside the context works: checkpoint_kwargs() restores the context for the recomputation
    loss, grads = _loss_and_grads(model, x_v, backward_inside=False)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-10, atol=1e-12, msg=name)


def test_checkpointing_without_context_fn_fails_clearly_outside_context():
    model, _ = _pair("vl")
    model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    with pytest.raises(RuntimeError, match="checkpoint_kwargs"):
        _loss_and_grads(model, _visual(), backward_inside=False)


def test_visual_width_mismatch_is_clear():
    model = apply_peft(tiny_roberta(), PeftConfig(rank=4, routing="mul"), "roberta")
    with (
        pytest.raises(ValueError, match="width 8, this routed layer expects 16"),
        visual_context(torch.zeros(3, 1, 8)),
    ):
        model(input_ids=IDS)


def test_batch_expansion_follows_repeat_interleave():
    routed, _ = _pair("vl")
    x_v = _visual(dtype=torch.float64)
    ids = IDS.repeat_interleave(2, dim=0)
    with visual_context(x_v):
        expanded = routed(input_ids=ids).last_hidden_state
    with visual_context(x_v.repeat_interleave(2, dim=0)):
        explicit = routed(input_ids=ids).last_hidden_state
    assert torch.equal(expanded, explicit)
    with pytest.raises(ValueError, match="not a multiple"), visual_context(x_v[:2]):
        routed(input_ids=IDS)


@pytest.mark.parametrize("family", ["gpt2", "bart"])
def test_beam_search_uses_each_samples_own_visual_features(family):
    """Beam search expands the batch ×k; each beam must route with its own sample's image."""
    build = tiny_gpt2 if family == "gpt2" else tiny_bart
    model = apply_peft(build(), PeftConfig(rank=4, routing="vl"), family)
    randomize_lora_b(model, seed=4)
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    x_v = _visual(2, 1, seed=5) * 3
    kwargs = {"max_new_tokens": 5, "num_beams": 3, "do_sample": False, "pad_token_id": 1}
    with visual_context(x_v):
        together = model.generate(input_ids=prompt, **kwargs)
    for i in range(2):
        with visual_context(x_v[i : i + 1]):
            alone = model.generate(input_ids=prompt[i : i + 1], **kwargs)
        assert torch.equal(together[i, : alone.shape[1]], alone[0])
