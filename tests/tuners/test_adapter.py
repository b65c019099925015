"""Bottleneck adapter: the formula (skip on/off, routing inside), placement per family, trainability."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from pydantic import ValidationError
from tuner_helpers import VOCAB, WIDTH, tiny_bart, tiny_gpt2, tiny_roberta, tiny_t5, tiny_vit

from vlpeft.config import AdapterConfig, PeftConfig
from vlpeft.errors import ConfigError
from vlpeft.routing import route
from vlpeft.tuners import AdaptedOutput, BottleneckAdapter, apply_peft, trainable_names, visual_context

IDS = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("kind", ["none", "add", "mul", "mul_expand", "vl", "vl_relu"])
def test_adapter_formula(skip, kind):
    torch.manual_seed(0)
    adapter = BottleneckAdapter(WIDTH, 4, routing=kind, activation="gelu", skip=skip, init_std=0.3).double()
    nn.init.normal_(adapter.down.bias)
    nn.init.normal_(adapter.up.bias)
    h = torch.randn(3, 5, WIDTH, dtype=torch.float64)
    x_v = torch.randn(3, 2, WIDTH, dtype=torch.float64)
    with visual_context(x_v):
        got = adapter(h)
    down = adapter.down
    z = route(kind, h @ down.weight.T + down.bias, x_v @ down.weight.T + down.bias)  # same down, bias too
    out = nn.functional.gelu(z) @ adapter.up.weight.T + adapter.up.bias
    torch.testing.assert_close(got, h + out if skip else out, rtol=1e-12, atol=1e-12)


def test_routed_adapter_needs_visual_context_and_plain_does_not():
    h = torch.randn(2, 3, WIDTH)
    BottleneckAdapter(WIDTH, 4)(h)
    with pytest.raises(RuntimeError, match="visual_context"):
        BottleneckAdapter(WIDTH, 4, routing="vl")(h)


FAMILIES = {
    "roberta": (tiny_roberta, ["attention.output.dense", "output.dense"], 4),
    "gpt2": (tiny_gpt2, ["attn.c_proj", "mlp.c_proj"], 4),
    "bart": (tiny_bart, ["self_attn.out_proj", "encoder_attn.out_proj", "fc2"], 5),
    "t5": (tiny_t5, ["SelfAttention.o", "EncDecAttention.o", "DenseReluDense.wo"], 5),
    "vit": (tiny_vit, ["attention.o_proj", "mlp.fc2"], 4),
}


def _inputs(family: str) -> dict[str, torch.Tensor]:
    if family == "vit":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))}
    if family in ("bart", "t5"):
        return {"input_ids": IDS, "decoder_input_ids": IDS[:, :4]}
    return {"input_ids": IDS}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_placement_and_trainability_per_family(family):
    build, suffixes, count = FAMILIES[family]
    model = apply_peft(build(), PeftConfig(method="adapter", rank=4, routing="mul"), family)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, AdaptedOutput)]
    assert len(wrapped) == count
    assert all(any(n.endswith(s) for s in suffixes) for n in wrapped)
    assert {s for s in suffixes for n in wrapped if n.endswith(s)} == set(suffixes)
    names = trainable_names(model)
    assert names and all(".adapter." in n or "norm" in n.lower() or "ln_" in n for n in names)
    x_v = torch.randn(2, 1, WIDTH)
    with visual_context(x_v):
        out = model(**_inputs(family))
        out[0].sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".adapter." in n)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("family", ["roberta", "gpt2"])
def test_zero_up_projection_with_skip_is_the_base_model(family):
    build = FAMILIES[family][0]
    base_out = build()(**_inputs(family))[0]
    model = apply_peft(build(), PeftConfig(method="adapter", rank=4, routing="vl"), family)
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, BottleneckAdapter):
                m.up.weight.zero_()
    with visual_context(torch.randn(2, 1, WIDTH)):
        torch.testing.assert_close(model(**_inputs(family))[0], base_out, rtol=0, atol=0)


def test_adapter_sits_on_sublayer_output_before_residual():
    """Without skip the sublayer output is replaced: zero up-projection ⇒ the sublayer contributes nothing."""
    model = apply_peft(
        tiny_roberta(), PeftConfig(method="adapter", rank=4, adapter=AdapterConfig(skip=False)), "roberta"
    )
    wrapped = model.encoder.layer[0].attention.output.dense
    assert isinstance(wrapped, AdaptedOutput)
    seen = {}
    wrapped.register_forward_hook(lambda mod, args, out: seen.update(inp=args[0], out=out))
    model(input_ids=IDS)
    want = wrapped.adapter.up(wrapped.adapter.act(wrapped.adapter.down(wrapped.base(seen["inp"]))))
    torch.testing.assert_close(seen["out"], want)


def test_positions_select_sublayers_and_target_override():
    attn_only = PeftConfig(method="adapter", adapter=AdapterConfig(positions=["attention"]))
    model = apply_peft(tiny_roberta(), attn_only, "roberta")
    assert all(n.endswith("attention.output.dense") for n in model._vlpeft_peft_state["adapted"])
    custom = PeftConfig(method="adapter", target_modules=["intermediate.dense"])
    with pytest.raises(ConfigError, match="is not a Linear/Conv1D output projection"):
        apply_peft(tiny_roberta(), custom.model_copy(update={"target_modules": ["layer"]}), "roberta")
    model = apply_peft(tiny_roberta(), custom, "roberta")
    assert len(model._vlpeft_peft_state["adapted"]) == 2


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="match no module"):
        apply_peft(tiny_roberta(), PeftConfig(method="adapter", target_modules=["nothing"]), "roberta")
    with pytest.raises(ConfigError, match="activation 'swishy' is unknown"):
        apply_peft(
            tiny_roberta(),
            PeftConfig(method="adapter", adapter=AdapterConfig(activation="swishy")),
            "roberta",
        )
    with pytest.raises(ConfigError, match="no default adapter positions"):
        apply_peft(tiny_roberta(), PeftConfig(method="adapter"), "mystery")
    with pytest.raises(ValidationError, match="routing=vl needs method lora or adapter"):
        PeftConfig(method="full", routing="vl")  # refused when params load (vlpeft.config)


def test_full_and_frozen():
    assert len(trainable_names(apply_peft(tiny_roberta(), PeftConfig(method="full"), "roberta"))) == len(
        list(tiny_roberta().parameters())
    )
    assert trainable_names(apply_peft(tiny_roberta(), PeftConfig(method="frozen"), "roberta")) == []


def test_routed_adapter_with_gradient_checkpointing_matches_plain_backward():
    from vlpeft.tuners import enable_gradient_checkpointing

    x_v = torch.randn(2, 1, WIDTH, generator=torch.Generator().manual_seed(2))
    readout = torch.randn(2, 6, WIDTH, generator=torch.Generator().manual_seed(3))
    grads = []
    for checkpointing in (False, True):
        model = apply_peft(tiny_roberta(), PeftConfig(method="adapter", rank=4, routing="vl"), "roberta")
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        assert model.encoder.layer[0].gradient_checkpointing is checkpointing
        with visual_context(x_v):
            loss = (model(input_ids=IDS).last_hidden_state * readout).sum()
        loss.backward()  # outside the context: the checkpoint recomputation restores it
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_shared_per_block_is_the_released_gpt2_layout(tmp_path):
    """One adapter per block at both positions (paper-notes §A.5): same outputs as per-position adapters
    holding the same weights, the released parameter count, and the sharing survives save → load."""
    from vlpeft.tuners import load_peft, save_peft

    a_cfg = AdapterConfig(activation="gelu_new", init_std=0.3, shared_per_block=True)
    cfg = PeftConfig(method="adapter", rank=4, routing="vl", adapter=a_cfg, train_layernorm=False)
    shared = apply_peft(tiny_gpt2(), cfg, "gpt2")
    blocks = shared.transformer.h
    assert all(b.attn.c_proj.adapter is b.mlp.c_proj.adapter for b in blocks)
    assert blocks[0].attn.c_proj.adapter is not blocks[1].attn.c_proj.adapter
    # paper-notes §B: GPT-2 Adapter r=128 (1 shared/block) = 12 · (2·768·128 + 128 + 768) = 2,370,048
    assert sum(p.numel() for p in shared.parameters() if p.requires_grad) == len(blocks) * (
        2 * WIDTH * 4 + 4 + WIDTH
    )

    own = apply_peft(tiny_gpt2(), cfg.model_copy(update={"adapter": AdapterConfig(activation="gelu_new")}))
    with torch.no_grad():
        for b_own, b_shared in zip(own.transformer.h, blocks, strict=True):
            for pos in (b_own.attn.c_proj, b_own.mlp.c_proj):
                pos.adapter.load_state_dict(b_shared.attn.c_proj.adapter.state_dict())
    x_v = torch.randn(2, 1, WIDTH, generator=torch.Generator().manual_seed(2))
    with visual_context(x_v), torch.no_grad():
        want = shared(input_ids=IDS).logits
        torch.testing.assert_close(own(input_ids=IDS).logits, want, rtol=0, atol=0)

    save_peft(shared, tmp_path / "shared")
    loaded = load_peft(tiny_gpt2(), tmp_path / "shared")
    assert all(b.attn.c_proj.adapter is b.mlp.c_proj.adapter for b in loaded.transformer.h)
    with visual_context(x_v), torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, want, rtol=0, atol=0)


def test_sharing_needs_numbered_blocks():
    from vlpeft.tuners.adapter.layer import block_of

    assert block_of("transformer.h.3.attn.c_proj") == "transformer.h.3"
    assert block_of("model.encoder.layers.0.fc2") == "model.encoder.layers.0"
    with pytest.raises(ConfigError, match="numbered block"):
        block_of("pooler.dense")
