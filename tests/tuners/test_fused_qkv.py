"""GPT-2's fused ``c_attn``: LoRA on the query and value thirds with one joint 2r bottleneck (released code).

The reference is an independent re-implementation of the released ``MergedLinearOnlyVLBeforeB`` forward
(paper-notes §A.4): ``A`` (2r × d) on text and vision, routing on the concatenated 2r bottleneck, ``B``
applied as a grouped conv1d (groups = 2), zero-padded into the 3d output at the q and v thirds.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from tuner_helpers import VOCAB, WIDTH, randomize_lora_b, tiny_gpt2

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError
from vlpeft.routing import ROUTING_KINDS, route
from vlpeft.tuners import RoutedLoraLinear, RoutedMergeError, apply_peft, load_peft, save_peft, visual_context
from vlpeft.tuners.lora.layer import lora_layers

IDS = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))


def _visual(m: int = 1, seed: int = 3) -> torch.Tensor:
    return torch.randn(3, m, WIDTH, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gpt2(kind: str, fused_qkv: str = "qv", rank: int = 4, alpha: float = 6.0) -> torch.nn.Module:
    model = apply_peft(
        tiny_gpt2().double(), PeftConfig(rank=rank, alpha=alpha, routing=kind, fused_qkv=fused_qkv), "gpt2"
    )
    randomize_lora_b(model)
    return model


def _c_attn(model: torch.nn.Module) -> RoutedLoraLinear:
    return model.base_model.model.transformer.h[0].attn.c_attn


def released_merged_lora(x, x_v, a, b, kind, scaling, enable=(True, False, True)):
    """The released ``MergedLinearOnlyVLBeforeB`` update (their loralib), rewritten from paper-notes §A.4."""
    after_a = x @ a.T  # (B, n, 2r)
    after_a_v = x_v @ a.T  # (B, m, 2r)
    z = route(kind, after_a, after_a_v)
    groups = sum(enable)
    after_b = F.conv1d(z.transpose(-2, -1), b.unsqueeze(-1), groups=groups).transpose(-2, -1)  # (B, n, 2d)
    d = b.shape[0] // groups
    pieces, j = [], 0
    for on in enable:  # zero_pad: adapted thirds in order, zeros elsewhere
        pieces.append(after_b[..., j * d : (j + 1) * d] if on else torch.zeros_like(after_b[..., :d]))
        j += on
    return torch.cat(pieces, dim=-1) * scaling


@pytest.mark.parametrize("kind", ROUTING_KINDS)
@pytest.mark.parametrize("m", [1, 4])
def test_c_attn_equals_the_released_merged_layer(kind, m):
    model = _gpt2(kind)
    layer = _c_attn(model)
    assert layer.qkv_slices == ("q", "v")
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert a.shape == (2 * 4, WIDTH) and b.shape == (2 * WIDTH, 4)
    x, x_v = torch.randn(3, 5, WIDTH, dtype=torch.float64), _visual(m)
    with visual_context(x_v), torch.no_grad():
        got = layer(x)
        base = layer.base_layer(x)
    want = base + released_merged_lora(x, x_v, a, b, kind, scaling=6.0 / 4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the key third is the frozen projection's, untouched
    torch.testing.assert_close(got[..., WIDTH : 2 * WIDTH], base[..., WIDTH : 2 * WIDTH], rtol=0, atol=0)


def test_routing_couples_query_and_value_only_through_the_joint_bottleneck():
    """vl: the query third depends on the value half of A; plain LoRA (none): it does not."""
    x, x_v = torch.randn(3, 5, WIDTH, dtype=torch.float64), _visual()
    for kind, coupled in (("vl", True), ("mul_expand", True), ("mul", False), ("none", False)):
        layer = _c_attn(_gpt2(kind))
        with visual_context(x_v), torch.no_grad():
            before = layer(x)[..., :WIDTH]
            layer.lora_A["default"].weight[4:] *= 3.0  # A_v only
            after = layer(x)[..., :WIDTH]
        assert (not torch.allclose(before, after)) is coupled, kind


def test_trainable_lora_count_is_the_papers_4dr_per_layer():
    """paper-notes §B: GPT-2 LoRA r=128 on q, v of 12 × 768-wide layers = 4,718,592 = 12 · 4 · 768 · 128."""
    model = _gpt2("vl", rank=4)
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert lora == 2 * 4 * WIDTH * 4  # 2 layers
    whole = _gpt2("vl", fused_qkv="all", rank=4)  # one rank-r LoRA over 3d outputs: (d + 3d) r per layer
    assert sum(p.numel() for n, p in whole.named_parameters() if ".lora_" in n) == 2 * 4 * WIDTH * 4
    assert _c_attn(whole).qkv_slices is None


def test_fused_all_with_routing_none_is_bit_identical_to_peft():
    torch.manual_seed(0)
    ours = apply_peft(tiny_gpt2(), PeftConfig(rank=4, alpha=8, fused_qkv="all"), "gpt2")
    torch.manual_seed(0)
    ref = get_peft_model(
        tiny_gpt2(), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    assert not any(isinstance(m, RoutedLoraLinear) for _, m in lora_layers(ours))
    randomize_lora_b(ours)
    randomize_lora_b(ref)
    assert torch.equal(ours(input_ids=IDS).logits, ref(input_ids=IDS).logits)


def test_plain_qv_lora_merges_and_routed_refuses():
    model = _gpt2("none")
    with torch.no_grad():
        unmerged = model(input_ids=IDS).logits
        merged = model.merge_and_unload()(input_ids=IDS).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-10, atol=1e-10)
    with pytest.raises(RoutedMergeError, match="depends on the image"):
        _gpt2("vl").merge_and_unload()


@pytest.mark.parametrize("kind", ["none", "vl"])
def test_gradients_reach_both_thirds_and_the_c_attn_bias(kind):
    model = apply_peft(tiny_gpt2(), PeftConfig(rank=4, routing=kind, bias="lora_only"), "gpt2")
    randomize_lora_b(model)
    with visual_context(_visual().float()):
        model(input_ids=IDS).logits.pow(2).mean().backward()
    layer = _c_attn(model)
    grad_a, grad_b = layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad
    assert grad_a[:4].abs().sum() > 0 and grad_a[4:].abs().sum() > 0  # A_q and A_v
    assert grad_b[:WIDTH].abs().sum() > 0 and grad_b[WIDTH:].abs().sum() > 0  # B_q and B_v
    assert layer.base_layer.bias.requires_grad and layer.base_layer.bias.grad is not None
    assert not layer.base_layer.weight.requires_grad


def test_save_load_keeps_the_layout_and_old_saves_load_as_whole_projection(tmp_path):
    model = _gpt2("mul_expand")
    x_v = _visual()
    with visual_context(x_v), torch.no_grad():
        want = model(input_ids=IDS).logits
    save_peft(model, tmp_path / "qv")
    loaded = load_peft(tiny_gpt2().double(), tmp_path / "qv")
    assert _c_attn(loaded).qkv_slices == ("q", "v")
    with visual_context(x_v), torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, want, rtol=0, atol=0)

    # A save written before peft.fused_qkv existed adapted the whole c_attn: it must load as such.
    whole = _gpt2("vl", fused_qkv="all")
    save_peft(whole, tmp_path / "old")
    state_file = tmp_path / "old" / "vlpeft_peft.json"
    state = json.loads(state_file.read_text())
    del state["peft"]["fused_qkv"]
    state_file.write_text(json.dumps(state))
    with visual_context(x_v), torch.no_grad():
        want = whole(input_ids=IDS).logits
        got = load_peft(tiny_gpt2().double(), tmp_path / "old")(input_ids=IDS).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bad_fused_qkv_value_names_the_allowed_ones():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'qv' or 'all'"):
        PeftConfig(fused_qkv="qk")


def test_a_projection_that_is_not_three_thirds_is_refused():
    from vlpeft.tuners.lora.layer import _check_slices

    with pytest.raises(ConfigError, match=r"not a fused q\|k\|v projection"):
        _check_slices(("q", "v"), torch.nn.Linear(4, 10), "h.0.attn.c_attn")
