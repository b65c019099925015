"""save_vl_model → load_vl_model gives identical outputs (routed layers restored); the vision encoder in the
loop with each vision-tower mode."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from vl_helpers import peft, randomize_peft

from vlpeft.errors import DataError
from vlpeft.models import build_vl_model, load_vl_model, param_report, save_vl_model
from vlpeft.tuners import RoutedLoraLinear
from vlpeft.tuners.adapter.layer import BottleneckAdapter


def _perturb(model: torch.nn.Module) -> None:
    """Move every trainable parameter away from its initial value (as training would)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_vqa_lora_routed_with_projection_round_trip(model_cfg, backbones, tmp_path):
    cfg = model_cfg.model_copy(update={"vision": backbones["vit24"], "projection": "linear"})
    model = build_vl_model("vqa", cfg, peft(routing="mul"), n_answers=4)
    _perturb(model)
    model.eval()
    enc = model.encode_questions(["is there a red circle ?", "what color ?"])
    visual = torch.randn(2, 1, 24)
    save_vl_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "vlpeft_model.json").read_text())
    assert meta["task"] == "vqa" and meta["n_answers"] == 4 and meta["peft"]["routing"] == "mul"
    assert meta["backbones"]["language"]["path"] == backbones["roberta"]
    assert (tmp_path / "m" / "lm_peft" / "adapter_model.safetensors").is_file()
    loaded = load_vl_model(tmp_path / "m")
    routed = [m for m in loaded.modules() if isinstance(m, RoutedLoraLinear)]
    assert len(routed) == 4 and all(m.routing == "mul" for m in routed)
    assert torch.equal(model(**enc, visual=visual).logits, loaded(**enc, visual=visual).logits)
    assert _trainable(loaded) == _trainable(model)
    assert param_report(loaded) == param_report(model)


def test_caption_adapter_routed_round_trip_generates_the_same(model_cfg, tmp_path):
    model = build_vl_model("caption", model_cfg, peft(method="adapter", routing="vl"))
    _perturb(model)
    model.eval()
    visual = torch.randn(2, 1, 16)
    save_vl_model(model, tmp_path / "c")
    loaded = load_vl_model(tmp_path / "c")
    adapters = [m for m in loaded.modules() if isinstance(m, BottleneckAdapter)]
    assert adapters and all(a.routing == "vl" for a in adapters)
    batch = model.encode_captions(["a red circle", "two blue square"])
    assert torch.equal(model(**batch, visual=visual).logits, loaded(**batch, visual=visual).logits)
    assert loaded.generate(visual, max_new_tokens=5, num_beams=2) == model.generate(
        visual, max_new_tokens=5, num_beams=2
    )


def test_generative_round_trip(model_cfg, tmp_path):
    model = build_vl_model("generative", model_cfg, peft(routing="vl"))
    randomize_peft(model)
    model.eval()
    visual = torch.randn(2, 2, 16)
    save_vl_model(model, tmp_path / "g")
    loaded = load_vl_model(tmp_path / "g")
    enc = model.encode_texts(["what color ?", "is there a circle ?"], task="vqa")
    labels = model.encode_targets(["red", "yes"])
    assert torch.equal(
        model(**enc, labels=labels, visual=visual).logits, loaded(**enc, labels=labels, visual=visual).logits
    )


def test_load_refuses_a_directory_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(DataError, match=r"vlpeft_model\.json"):
        load_vl_model(tmp_path)


def _images(n: int) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(32, 32, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


@pytest.mark.parametrize("tower", ["frozen", "lora", "adapter", "full"])
def test_vision_encoder_in_the_loop(model_cfg, tower, tmp_path):
    cfg = model_cfg.model_copy(update={"vision_tower": tower})
    model = build_vl_model("vqa", cfg, peft(routing="add"), n_answers=3, with_vision=True)
    randomize_peft(model)
    pixels = model.vision.preprocess(_images(2))
    enc = model.encode_questions(["what color ?", "how many ?"])
    out = model(**enc, pixel_values=pixels, targets=torch.rand(2, 3))
    out.loss.backward()
    vision_grads = {n for n, p in model.vision.named_parameters() if p.grad is not None}
    vision_trainable = {n for n, p in model.vision.named_parameters() if p.requires_grad}
    assert vision_grads == vision_trainable
    if tower == "frozen":
        assert not vision_trainable and not model.vision.training
    elif tower == "lora":
        assert vision_trainable and all(".lora_" in n or "layernorm" in n for n in vision_trainable)
        assert not any(isinstance(m, RoutedLoraLinear) for m in model.vision.modules())
    elif tower == "adapter":
        assert vision_trainable and all(".adapter." in n or "layernorm" in n for n in vision_trainable)
        assert all(m.routing == "none" for m in model.vision.modules() if isinstance(m, BottleneckAdapter))
    else:
        assert vision_trainable == {n for n, _ in model.vision.named_parameters()}
    # pixels through the model = its own features through the model
    model.eval()
    with torch.no_grad():
        feats = model.vision(pixels, kind="pooled")
        torch.testing.assert_close(
            model(**enc, pixel_values=pixels).logits, model(**enc, visual=feats).logits
        )
    rep = param_report(model)
    norms = sum(
        p.numel() for m in model.vision.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()
    )
    everything = sum(p.numel() for p in model.vision.parameters())
    assert rep["by_group"]["vision"] == (everything - norms if tower == "full" else 0)  # norms: "layernorm"
    if tower != "frozen":
        _perturb(model)
        model.eval()
        save_vl_model(model, tmp_path / "v")
        loaded = load_vl_model(tmp_path / "v")
        with torch.no_grad():
            a = model(**enc, pixel_values=pixels).logits
            torch.testing.assert_close(loaded(**enc, pixel_values=pixels).logits, a, rtol=0, atol=0)


def test_frozen_encoder_attaches_lazily_for_pixels(model_cfg):
    model = build_vl_model("caption", model_cfg, peft(routing="vl")).eval()
    assert model.vision is None
    from vlpeft.models.vision import VisionEncoder

    ref = VisionEncoder.from_pretrained(model_cfg.vision)
    pixels = ref.preprocess(_images(2))
    caps = model.generate(pixel_values=pixels, max_new_tokens=3)
    assert model.vision is not None and len(caps) == 2
    with torch.no_grad():
        assert caps == model.generate(visual=ref(pixels), max_new_tokens=3)
