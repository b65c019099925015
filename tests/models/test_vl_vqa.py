"""VQA encoder + classifier: shapes, loss, one embedding pass, blind vs prefix, widths, gradients, counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from vl_helpers import peft, randomize_peft

from vlpeft.errors import ConfigError
from vlpeft.models import build_vl_model, param_report
from vlpeft.models.vqa import VqaHead

N_ANS = 5
QUESTIONS = ["is there a red circle ?", "what color is the square ?"]


def _batch(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = model.encode_questions(QUESTIONS)
    return {**enc, "visual": torch.randn(2, 1, 16, generator=g), "targets": torch.rand(2, N_ANS, generator=g)}


def test_forward_shapes_and_loss_is_bce_summed_over_answers(model_cfg):
    model = build_vl_model("vqa", model_cfg, peft(routing="mul"), n_answers=N_ANS).eval()
    batch = _batch(model)
    out = model(**batch)
    assert out.logits.shape == (2, N_ANS)
    p = torch.sigmoid(out.logits)
    t = batch["targets"]
    by_hand = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).sum(dim=1).mean()
    torch.testing.assert_close(out.loss, by_hand, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.predict(**batch), out.logits.argmax(-1))


def test_questions_are_encoded_with_cls_and_sep(model_cfg):
    model = build_vl_model("vqa", model_cfg, peft(), n_answers=N_ANS)
    enc = model.encode_questions(["a red circle", "a"], max_length=4)
    tok = model.tokenizer
    assert enc["input_ids"][0].tolist() == [
        tok.cls_token_id,
        *tok.convert_tokens_to_ids(["a", "red"]),
        tok.sep_token_id,
    ]
    assert enc["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_prefix_goes_through_the_embedding_module_once(model_cfg, backbones, family):
    """P6: a prefix equal to the <s> word embedding must give exactly the HF model on [<s>, <s>, …]."""
    cfg = model_cfg.model_copy(update={"vqa_backbone": backbones[family]})
    model = build_vl_model("vqa", cfg, peft(method="frozen"), n_answers=N_ANS).eval()
    assert model.family == family
    enc = model.encode_questions(QUESTIONS)
    cls_id = model.tokenizer.cls_token_id
    word = model.hf.get_input_embeddings().weight[cls_id].detach()
    out = model(**enc, visual=word.expand(2, 1, 16))
    ids = torch.cat([torch.full((2, 1), cls_id), enc["input_ids"]], dim=1)
    mask = torch.cat([torch.ones(2, 1, dtype=torch.long), enc["attention_mask"]], dim=1)
    with torch.no_grad():
        h0 = model.hf(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        torch.testing.assert_close(out.logits, model.head(h0))


def test_blind_model_reads_cls_and_ignores_the_image(model_cfg):
    cfg = model_cfg.model_copy(update={"visual_prefix": False})
    model = build_vl_model("vqa", cfg, peft(), n_answers=N_ANS).eval()
    assert not model.uses_visual and model.projection is None
    enc = model.encode_questions(QUESTIONS)
    a = model(**enc).logits
    b = model(**enc, visual=torch.randn(2, 1, 16)).logits
    torch.testing.assert_close(a, b)
    with torch.no_grad():
        h0 = model.hf(**enc).last_hidden_state[:, 0]
    torch.testing.assert_close(a, model.head(h0))


def test_prefix_model_uses_the_image_and_needs_it(model_cfg):
    model = build_vl_model("vqa", model_cfg, peft(), n_answers=N_ANS).eval()
    enc = model.encode_questions(QUESTIONS)
    a = model(**enc, visual=torch.randn(2, 1, 16)).logits
    b = model(**enc, visual=torch.randn(2, 1, 16)).logits
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="visual"):
        model(**enc)


def test_width_mismatch_without_projection_is_a_config_error(model_cfg, backbones):
    cfg = model_cfg.model_copy(update={"vision": backbones["vit24"]})
    with pytest.raises(ConfigError, match=r"model\.projection.*width 24.*width 16"):
        build_vl_model("vqa", cfg, peft(), n_answers=N_ANS)
    # the blind model never looks at the image, so no width is needed
    build_vl_model("vqa", cfg.model_copy(update={"visual_prefix": False}), peft(), n_answers=N_ANS)


def test_linear_projection_maps_visual_width_and_trains(model_cfg, backbones):
    cfg = model_cfg.model_copy(update={"vision": backbones["vit24"], "projection": "linear"})
    model = build_vl_model("vqa", cfg, peft(routing="add"), n_answers=N_ANS)
    assert (model.projection.in_features, model.projection.out_features) == (24, 16)
    batch = {
        **model.encode_questions(QUESTIONS),
        "visual": torch.randn(2, 1, 24),
        "targets": torch.rand(2, N_ANS),
    }
    model(**batch).loss.backward()
    assert model.projection.weight.grad is not None and model.projection.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="24"):
        model(**{**batch, "visual": torch.randn(2, 1, 16)})


@pytest.mark.parametrize("method", ["lora", "adapter", "full"])
def test_gradients_reach_exactly_the_trainable_parameters(model_cfg, method):
    routing = "none" if method == "full" else "vl"  # routing lives in LoRA/adapter bottlenecks
    model = build_vl_model("vqa", model_cfg, peft(method=method, routing=routing), n_answers=N_ANS)
    randomize_peft(model)  # non-zero LoRA B, so LoRA A gets a non-zero gradient too
    model(**_batch(model)).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("head.") for n in trainable)
    # pitfall P10: LoRA A must not be zero after the backbone came through from_pretrained
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)
    if method == "lora":
        assert all(".lora_" in n or "LayerNorm" in n or n.startswith("head.") for n in trainable)
    if method == "adapter":
        assert any(".adapter." in n for n in trainable)


def test_param_report_matches_a_hand_count(model_cfg, backbones):
    model = build_vl_model("vqa", model_cfg, peft(routing="mul"), n_answers=N_ANS)
    d, r, layers, k = 16, 4, 2, 2
    lora = layers * 2 * (r * d + d * r)  # query and value: A (r×d) and B (d×r)
    norms = 2 * layers * 2 * d  # 2 block LNs per layer, weight and bias (embedding LN frozen, §B.4)
    head = (d * k * d + k * d) + 2 * k * d + (k * d * N_ANS + N_ANS)
    from transformers import AutoModel, ViTModel

    roberta = sum(
        p.numel()
        for p in AutoModel.from_pretrained(backbones["roberta"], add_pooling_layer=False).parameters()
    )
    vit = sum(
        p.numel() for p in ViTModel.from_pretrained(backbones["vit"], add_pooling_layer=False).parameters()
    )
    rep = param_report(model)
    assert rep["by_group"] == {
        "peft": lora,
        "layernorm": norms,
        "head": head,
        "projection": 0,
        "vision": 0,
        "language": 0,
    }
    assert rep["trainable"] == lora + norms + head
    assert rep["total"] == roberta + lora + head + vit and rep["vision_counted"]
    assert rep["percent"] == pytest.approx(100 * rep["trainable"] / rep["total"])


def test_head_is_two_layers_with_layernorm():
    head = VqaHead(8, 3, hidden_mult=2)
    assert [type(m).__name__ for m in head] == ["Linear", "LayerNorm", "GELU", "Linear"]
    x = torch.randn(4, 8)
    h = F.gelu(F.layer_norm(x @ head[0].weight.T + head[0].bias, (16,), head[1].weight, head[1].bias))
    torch.testing.assert_close(head(x), h @ head[3].weight.T + head[3].bias)


def test_vqa_needs_n_answers(model_cfg):
    with pytest.raises(ConfigError, match="n_answers"):
        build_vl_model("vqa", model_cfg, peft())


def test_config_errors_name_the_field(model_cfg, backbones, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.vision: cannot load"):
        build_vl_model("vqa", model_cfg.model_copy(update={"vision": str(tmp_path / "nope")}), peft(), 3)
    with pytest.raises(ConfigError, match=r"model\.vqa_backbone: .*'gpt2' model"):
        build_vl_model("vqa", model_cfg.model_copy(update={"vqa_backbone": backbones["gpt2"]}), peft(), 3)
    with pytest.raises(ConfigError, match=r"model\.generative_backbone: not set"):
        build_vl_model("generative", model_cfg.model_copy(update={"generative_backbone": None}), peft())
    with pytest.raises(ConfigError, match="task 'nlvr' is unknown"):
        build_vl_model("nlvr", model_cfg, peft())
    blind = model_cfg.model_copy(update={"visual_prefix": False, "vision_tower": "lora"})
    with pytest.raises(ConfigError, match="does not use the image"):
        build_vl_model("vqa", blind, peft(), 3)


def test_too_long_input_is_a_clear_error(model_cfg):
    model = build_vl_model("vqa", model_cfg, peft(), n_answers=N_ANS)
    ids = torch.ones(1, 47, dtype=torch.long)  # + 1 prefix > 48 - 1 (positions start after pad id 0)
    with pytest.raises(ValueError, match="exceeds the 47 positions"):
        model(ids, visual=torch.randn(1, 1, 16))
    assert model(ids[:, :46], visual=torch.randn(1, 1, 16)).logits.shape == (1, N_ANS)  # fits exactly


@pytest.mark.parametrize("prefix", [True, False])
def test_prefix_model_learns_an_image_only_task_the_blind_model_cannot(model_cfg, prefix):
    """The answer is which of 3 images was shown and the question is always the same: with the image the
    model learns it, the blind model stays at the 1/3 prior."""
    torch.manual_seed(0)
    cfg = model_cfg.model_copy(update={"visual_prefix": prefix})
    model = build_vl_model("vqa", cfg, peft(), n_answers=3).train()
    protos = torch.randn(3, 1, 16, generator=torch.Generator().manual_seed(1)) * 3
    labels = torch.arange(6) % 3
    batch = {
        **model.encode_questions(["what is it ?"] * 6),
        "visual": protos[labels],
        "targets": F.one_hot(labels, 3).float(),
    }
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(15):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    accuracy = (model.eval().predict(**batch) == labels).float().mean().item()
    assert accuracy == 1.0 if prefix else accuracy <= 1 / 3 + 1e-6
