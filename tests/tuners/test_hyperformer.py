"""Hyperformer: equals a from-formula re-implementation with copied weights; conditioning; counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tuner_helpers import VOCAB, WIDTH, tiny_bart

from vlpeft.config import PeftConfig
from vlpeft.routing import route
from vlpeft.tuners import apply_peft, task_context, visual_context
from vlpeft.tuners.adapter.layer import AdaptedOutput
from vlpeft.tuners.hyperformer.hypernet import HyperAdapter

R, E, HID, P = 4, 6, 5, 3
TASKS = ["vqa", "gqa", "nlvr", "caption"]
IDS = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))


def _model(routing: str = "none"):
    cfg = PeftConfig(
        method="hyperformer",
        rank=R,
        routing=routing,
        tasks=TASKS,
        hyperformer={"task_embedding_dim": E, "task_hidden_dim": HID, "projected_dim": P},
    )
    model = apply_peft(tiny_bart(), cfg, "bart")
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():  # move every hypernet weight off its init (zero biases would hide bias terms)
        for name, p in model.named_parameters():
            if name.startswith("vlpeft_hyper."):
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _adapters(model) -> list[tuple[str, HyperAdapter]]:
    return [(n, m.adapter) for n, m in model.named_modules() if isinstance(m, AdaptedOutput)]


def _reference(params, task, stack, layer, position, h):
    """Hyperformer++ from its formulas (VL-Adapter's AdapterLayersHyperNetController + call_adapter)."""
    pre = f"vlpeft_hyper.stacks.{stack}."
    z = params[f"vlpeft_hyper.task_embeddings.embeddings.{task}"]
    layer_emb = params[pre + "layer_embeddings.weight"][layer]
    x = torch.cat([z, layer_emb])
    hidden = torch.relu(params[pre + "task_hypernet.0.weight"] @ x + params[pre + "task_hypernet.0.bias"])
    s = params[pre + "task_hypernet.2.weight"] @ hidden + params[pre + "task_hypernet.2.bias"]
    s = (s - s.mean()) / torch.sqrt(s.var(unbiased=False) + 1e-6)
    s = s * params[pre + "layer_norm.weight"] + params[pre + "layer_norm.bias"]
    g = pre + f"generators.{position}."

    def gen(kind):
        return params[g + kind + ".weight"] @ s + params[g + kind + ".bias"]

    w_down, b_down = gen("down_weight").view(R, WIDTH), gen("down_bias")
    w_up, b_up = gen("up_weight").view(WIDTH, R), gen("up_bias")
    x = h @ w_down.T + b_down
    mid = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))  # gelu_new
    return h + mid @ w_up.T + b_up, (w_down, b_down)


def test_positions_and_stacks_as_vl_adapter_places_them():
    model = _model()
    positions = sorted((n.split(".")[1], a.layer, a.position) for n, a in _adapters(model))
    assert positions == [
        ("decoder", 0, "cross_attention"),
        ("decoder", 0, "feed_forward"),
        ("decoder", 0, "self_attention"),
        ("encoder", 0, "feed_forward"),
        ("encoder", 0, "self_attention"),
    ]


@pytest.mark.parametrize("task", ["vqa", "caption"])
def test_adapters_equal_the_formula_with_copied_weights(task):
    model = _model()
    params = {n: p.detach() for n, p in model.named_parameters()}
    h = torch.randn(2, 5, WIDTH)
    for name, adapter in _adapters(model):
        with task_context(task), torch.no_grad():
            got = adapter(h)
        want, _ = _reference(params, task, name.split(".")[1], adapter.layer, adapter.position, h)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_tasks_and_layers_get_different_weights_and_a_task_is_required():
    model = _model()
    (_, adapter), *_ = _adapters(model)
    h = torch.randn(1, 3, WIDTH)
    with torch.no_grad():
        with task_context("vqa"):
            a = adapter(h)
        with task_context("gqa"):
            b = adapter(h)
    assert not torch.allclose(a, b)
    net = adapter._net
    z = model.vlpeft_hyper.task_embeddings("vqa")
    assert not torch.allclose(net.embedding(z, 0), net.embedding(torch.zeros_like(z), 0))
    with pytest.raises(RuntimeError, match=r"Hyperformer adapter .* needs the batch's task"):
        model(input_ids=IDS, labels=IDS)


def test_gradients_reach_only_the_current_tasks_embedding():
    model = _model()
    with task_context("nlvr"):
        model(input_ids=IDS, labels=IDS).loss.backward()
    for task in TASKS:
        grad = model.vlpeft_hyper.task_embeddings.embeddings[task].grad
        assert (grad is not None and bool(grad.abs().sum() > 0)) is (task == "nlvr"), task


def test_parameter_count_equals_the_formula():
    model = _model()
    own = sum(p.numel() for n, p in model.named_parameters() if n.startswith("vlpeft_hyper."))
    per_type = (P + 1) * (2 * WIDTH * R + R + WIDTH)
    stack = 1 * E + (2 * E * HID + HID) + (HID * P + P) + 2 * P
    assert own == (stack + 2 * per_type) + (stack + 3 * per_type) + len(TASKS) * E


@pytest.mark.parametrize("kind", ["mul", "vl"])
def test_routed_hyperformer_equals_route_on_the_generated_down(kind):
    model = _model(kind)
    params = {n: p.detach() for n, p in model.named_parameters()}
    name, adapter = _adapters(model)[0]
    gen = torch.Generator().manual_seed(1)  # fixed inputs: the tolerance below holds for them, not by luck
    h, x_v = torch.randn(2, 4, WIDTH, generator=gen), torch.randn(2, 1, WIDTH, generator=gen)
    with task_context("vqa"), visual_context(x_v), torch.no_grad():
        got = adapter(h)
    _, (w_down, b_down) = _reference(params, "vqa", name.split(".")[1], adapter.layer, adapter.position, h)
    z = route(kind, h @ w_down.T + b_down, x_v @ w_down.T + b_down)  # the same generated down for X_v
    task_embedding = model.vlpeft_hyper.task_embeddings("vqa")
    w_up, b_up = adapter._net.adapter_weights(task_embedding, adapter.layer, adapter.position)[2:]
    want = h + F.gelu(z, approximate="tanh") @ w_up.detach().T + b_up.detach()
    # float32 in another order of operations: `vl` multiplies two bottleneck projections (<x_t, x_v> x_v),
    # so its rounding error is a few 1e-5 relative (an unseeded run once reached 4.4e-5).
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
