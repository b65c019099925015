"""Compacter: the PHM layer (Kronecker formula), factorised and shared-rule variants, init, routing."""

from __future__ import annotations

import math

import pytest
import torch
from tuner_helpers import VOCAB, WIDTH, tiny_bart

from vlpeft.config import PeftConfig
from vlpeft.routing import route
from vlpeft.tuners import apply_peft, trainable_names, visual_context
from vlpeft.tuners.adapter.layer import Bottleneck
from vlpeft.tuners.compacter.phm import PHMLinear


def _randomize(layer: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_phm_layer_is_x_times_sum_of_kronecker_products(n):
    layer = PHMLinear(8, 12, n)
    _randomize(layer)
    x = torch.randn(3, 5, 8)
    a, w = layer.rule.detach(), layer.W.detach()
    h = sum(torch.kron(a[i], w[i]) for i in range(n))  # (8, 12): x @ H, not H^T
    torch.testing.assert_close(layer(x), x @ h + layer.b.detach())


def test_factorised_weights_are_the_product_of_their_factors():
    layer = PHMLinear(8, 12, 2, factorized=True, phm_rank=3)
    _randomize(layer)
    w = torch.stack([layer.W_left[i] @ layer.W_right[i] for i in range(2)]).detach()
    h = sum(torch.kron(layer.rule[i].detach(), w[i]) for i in range(2))
    x = torch.randn(4, 8)
    torch.testing.assert_close(layer(x), x @ h + layer.b.detach())
    assert sum(p.numel() for p in layer.parameters()) == 3 * (8 + 12) + 2**3 + 12


def test_parameter_count_and_initialisation():
    n, i, o = 2, 64, 32
    layer = PHMLinear(i, o, n)
    assert sum(p.numel() for p in layer.parameters()) == i * o // n + n**3 + o
    bound = math.sqrt(2) * math.sqrt(6 / (i // n + o // n))  # Glorot-uniform, gain √2, per W_i
    assert layer.W.abs().max() <= bound and layer.W.abs().max() > 0.8 * bound
    assert torch.equal(layer.b, torch.zeros(o))
    big = PHMLinear(8, 8, 8)  # 512 rule entries ~ N(0, 0.01²)
    assert 0.007 < big.rule.std().item() < 0.013


def test_shared_rule_is_one_parameter_for_every_layer():
    model = apply_peft(
        tiny_bart(), PeftConfig(method="compacter", rank=4, compacter={"shared_rule": True}), "bart"
    )
    phm = [m for m in model.modules() if isinstance(m, PHMLinear)]
    assert len(phm) == 2 * 5  # down + up at 5 BART positions (1+1 layers)
    assert len({id(m.rule) for m in phm}) == 1
    names = trainable_names(model)
    assert names.count("vlpeft_phm_rule.rule") == 1 and not any("own_rule" in n for n in names)
    ids = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert model.vlpeft_phm_rule.rule.grad is not None


def test_compacter_trains_only_its_layers_and_norms():
    model = apply_peft(tiny_bart(), PeftConfig(method="compacter", rank=4, layernorm_scope="all"), "bart")
    for name in trainable_names(model):
        assert ".adapter." in name or "layer_norm" in name or "layernorm" in name, name
    per_adapter = 2 * WIDTH * 4 // 2 + 2 * 2**3 + 4 + WIDTH
    assert sum(p.numel() for n, p in model.named_parameters() if ".adapter." in n) == 5 * per_adapter


@pytest.mark.parametrize("kind", ["add", "mul", "vl", "vl_relu", "mul_expand"])
def test_routed_compacter_bottleneck_equals_route_on_the_shared_down(kind):
    torch.manual_seed(0)
    down, up = PHMLinear(WIDTH, 4, 2), PHMLinear(4, WIDTH, 2)
    _randomize(down, 1)
    _randomize(up, 2)
    adapter = Bottleneck(down, up, routing=kind, activation="gelu_new")
    h, x_v = torch.randn(2, 6, WIDTH), torch.randn(2, 1, WIDTH)
    with visual_context(x_v):
        got = adapter(h)
    z = route(kind, down(h), down(x_v))
    want = h + up(torch.nn.functional.gelu(z, approximate="tanh"))
    torch.testing.assert_close(got, want)
