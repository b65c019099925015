"""The encoder-decoder in the multi-task setting: task context, losses, NLVR2 scoring, routing in BART."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from vl_helpers import peft, randomize_peft

from vlpeft.models import build_vl_model
from vlpeft.models.generative import sequence_loss
from vlpeft.routing import route
from vlpeft.tuners import current_task, require_task, task_context, visual_context


class TaskProbe(nn.Module):
    """Wraps a linear layer; records the task it sees on every call and needs one (like a per-task module)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.seen: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(require_task("TaskProbe"))
        return self.base(x)


def _probed(model_cfg, **kw):
    model = build_vl_model("generative", model_cfg, peft(**kw))
    enc_layer = model.hf.get_encoder().layers[0]
    dec_layer = model.hf.get_decoder().layers[0]
    probes = [TaskProbe(enc_layer.fc2), TaskProbe(dec_layer.fc2)]
    enc_layer.fc2, dec_layer.fc2 = probes
    return model, probes


def test_task_context_nests_and_is_required():
    assert current_task() is None
    with task_context("gqa"):
        assert current_task() == "gqa"
        with task_context("nlvr"):
            assert require_task("x") == "nlvr"
        assert current_task() == "gqa"
    with pytest.raises(RuntimeError, match="TaskProbe needs the batch's task but none is set"):
        require_task("TaskProbe")


def test_task_reaches_encoder_and_decoder_layers_in_forward_and_beam_search(model_cfg):
    model, probes = _probed(model_cfg, routing="vl")
    model.eval()
    visual = torch.randn(2, 1, 16)
    enc = model.encode_texts(["what color ?", "is there a circle ?"], task="gqa")
    with pytest.raises(RuntimeError, match="needs the batch's task"):
        model(**enc, labels=model.encode_targets(["red", "yes"]), visual=visual)
    for p in probes:
        p.seen.clear()
    model(**enc, labels=model.encode_targets(["red", "yes"]), visual=visual, task="gqa")
    assert all(p.seen == ["gqa"] for p in probes)
    for p in probes:
        p.seen.clear()
    model.generate(visual, max_new_tokens=3, num_beams=2, task="caption")
    assert probes[0].seen == ["caption"]  # the encoder runs once
    assert len(probes[1].seen) >= 2 and set(probes[1].seen) == {"caption"}  # every decoding step


def test_task_context_survives_gradient_checkpointing(model_cfg):
    model, probes = _probed(model_cfg, routing="vl")
    model.train()
    model.gradient_checkpointing_enable()
    enc = model.encode_texts(["what color ?"], task="vqa")
    out = model(**enc, labels=model.encode_targets(["red"]), visual=torch.randn(1, 1, 16), task="vqa")
    for p in probes:
        p.seen.clear()
    out.loss.backward()  # outside any context: recomputation restores the forward's task
    assert all(p.seen == ["vqa"] for p in probes)


def test_weighted_sample_loss_equals_a_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 4, -100], [2, 0, 3]])
    weights = torch.tensor([0.6, 1.0])
    per_sample = []
    for b in range(2):
        terms = []
        for t in range(3):
            if labels[b, t] == -100:
                continue
            row = logits[b, t].tolist()
            log_z = math.log(sum(math.exp(v) for v in row))
            terms.append(log_z - row[int(labels[b, t])])
        per_sample.append(sum(terms) / len(terms))
    hand_vqa = (weights[0].item() * per_sample[0] + weights[1].item() * per_sample[1]) / 2
    hand_sample = (per_sample[0] + per_sample[1]) / 2
    got = sequence_loss(logits, labels, "sample", weights)
    assert got.item() == pytest.approx(hand_vqa, rel=1e-5)
    assert sequence_loss(logits, labels, "sample").item() == pytest.approx(hand_sample, rel=1e-5)
    # token mean: every supervised token counts once (5 tokens)
    all_terms = []
    for b in range(2):
        for t in range(3):
            if labels[b, t] != -100:
                row = logits[b, t]
                all_terms.append(float(torch.logsumexp(row, 0) - row[labels[b, t]]))
    assert sequence_loss(logits, labels, "token").item() == pytest.approx(sum(all_terms) / 5, rel=1e-5)


def test_model_loss_uses_the_sampled_answer_weight(model_cfg):
    model = build_vl_model("generative", model_cfg, peft()).eval()
    enc = model.encode_texts(["what color ?", "how many ?"], task="vqa")
    labels = model.encode_targets(["red", "two"])
    w = torch.tensor([0.3, 1.0])
    out = model(**enc, labels=labels, visual=torch.randn(2, 1, 16), loss_reduction="sample", sample_weights=w)
    torch.testing.assert_close(out.loss, sequence_loss(out.logits, labels, "sample", w))


def test_nlvr_decision_is_the_true_false_logit_comparison(model_cfg):
    model = build_vl_model("generative", model_cfg, peft()).eval()
    randomize_peft(model)
    enc = model.encode_texts(["there are two circles", "both images have a red square"], task="nlvr")
    visual = torch.randn(2, 2, 16)
    scores = model.score_choices(enc["input_ids"], enc["attention_mask"], ("yes", "no"), visual=visual)
    embeds, mask = model.encoder_inputs(enc["input_ids"], enc["attention_mask"], model.encode_visual(visual))
    start = torch.full((2, 1), model.hf.config.decoder_start_token_id)
    logits = model.hf(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=start).logits[:, 0]
    tok = model.tokenizer
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    torch.testing.assert_close(scores, logits[:, [yes, no]])
    assert (scores[:, 0] > scores[:, 1]).tolist() == (logits[:, yes] > logits[:, no]).tolist()


@pytest.mark.parametrize(
    "where",
    [
        "model.encoder.layers.0.self_attn.q_proj",
        "model.decoder.layers.0.self_attn.v_proj",
        "model.decoder.layers.0.encoder_attn.q_proj",
    ],
)
def test_routing_in_bart_encoder_and_decoder_lora_layers_equals_route(model_cfg, where):
    model = build_vl_model("generative", model_cfg, peft(routing="vl"))
    randomize_peft(model)
    layer = model.hf.get_submodule(where)
    x = torch.randn(2, 5, 16)
    x_v = torch.randn(2, 1, 16)
    with visual_context(x_v):
        got = layer(x)
    a, b = layer.lora_A["default"], layer.lora_B["default"]
    z = route("vl", a(x), a(x_v))
    want = layer.base_layer(x) + layer.scaling["default"] * b(z)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "where", ["model.encoder.layers.0.fc2", "model.decoder.layers.0.encoder_attn.out_proj"]
)
def test_routing_in_bart_adapters_equals_route(model_cfg, where):
    model = build_vl_model("generative", model_cfg, peft(method="adapter", routing="mul"))
    layer = model.hf.get_submodule(where)
    adapter = layer.adapter
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 5, layer.base.in_features)
    x_v = torch.randn(2, 1, 16)
    with visual_context(x_v):
        got = layer(x)
    h = layer.base(x)
    z = route("mul", adapter.down(h), adapter.down(x_v))
    want = h + adapter.up(adapter.act(z))
    torch.testing.assert_close(got, want)


def test_clip_vision_encoder_loads_from_a_config_and_its_grid_pools_to_6x6(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from vlpeft.models.vision import VisionEncoder, pool_grid

    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision = CLIPVisionConfig(**small, image_size=28, patch_size=4)  # a 7x7 grid, as CLIP-B/32 at 224 px
    text = CLIPTextConfig(**small)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict())).save_pretrained(
        tmp_path
    )
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
        tmp_path
    )
    enc = VisionEncoder.from_pretrained(str(tmp_path))
    assert type(enc.model).__name__ == "CLIPVisionModel" and enc.grid == 7
    from PIL import Image

    pixels = enc.preprocess([Image.new("RGB", (40, 30), "red"), Image.new("RGB", (28, 28), "blue")])
    tokens = enc(pixels, kind="tokens")
    assert tokens.shape == (2, 50, 16)
    pooled = pool_grid(tokens, (6, 6))
    assert pooled.shape == (2, 36, 16)
    grid = tokens[:, 1:].reshape(2, 7, 7, 16)
    # adaptive 7 -> 6: output cell (i, j) is the max over rows i..i+1 and columns j..j+1
    torch.testing.assert_close(pooled[:, 0], grid[:, :2, :2].amax(dim=(1, 2)))
    torch.testing.assert_close(pooled[:, 35], grid[:, 5:, 5:].amax(dim=(1, 2)))
    # the feature store keeps the pooled grid when asked (features.grid_pool: [6, 6])
    from vlpeft.data.features import FeatureStore, extract_features

    for i, color in enumerate(("red", "blue")):
        Image.new("RGB", (28, 28), color).save(tmp_path / f"{i}.png")
    items = [(7, tmp_path / "0.png"), (9, tmp_path / "1.png")]
    extract_features(enc, items, tmp_path / "store", kind="tokens", grid_pool=(6, 6))
    store = FeatureStore(tmp_path / "store")
    assert store.num_tokens("tokens") == 36 and store.provenance["grid_pool"] == [6, 6]
    torch.testing.assert_close(
        store.get([9], "tokens"), pool_grid(enc(enc.preprocess([Image.open(items[1][1])]), "tokens"))
    )
