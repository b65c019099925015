"""VisionEncoder: pooled feature = final-LayerNorm CLS computed directly by ViTModel; no untrained pooler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, ViTConfig, ViTModel

from vlpeft.config import PretrainConfig
from vlpeft.errors import ConfigError, DataError
from vlpeft.models.vision import VisionEncoder
from vlpeft.pretrain.vit import build_image_processor

CONFIG = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
)


def save_vit(path, pooler: bool, seed: int = 0) -> ViTModel:
    torch.manual_seed(seed)
    model = ViTModel(ViTConfig(**CONFIG), add_pooling_layer=pooler).eval()
    model.save_pretrained(path)
    build_image_processor(PretrainConfig(vit={"image_size": 32})).save_pretrained(path)
    return model


def images(n: int = 3, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_cls_tokens_and_mean_against_vitmodel(tmp_path):
    ref = save_vit(tmp_path, pooler=False)
    enc = VisionEncoder.from_pretrained(str(tmp_path))
    assert enc.width == 32 and enc.image_size == 32 and enc.pooling == "cls"
    assert enc.num_tokens("pooled") == 1 and enc.num_tokens("tokens") == 17
    pixels = enc.preprocess(images())
    expected_pixels = AutoImageProcessor.from_pretrained(tmp_path)(images=images(), return_tensors="pt")
    assert torch.equal(pixels, expected_pixels["pixel_values"])
    with torch.no_grad():
        hidden = ref(pixel_values=pixels).last_hidden_state
        # Independent reference: the encoder's final LayerNorm applied to the last layer's output.
        raw = ref(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        direct_cls = ref.layernorm(raw)[:, 0]
        pooled, tokens = enc(pixels, kind="pooled"), enc(pixels, kind="tokens")
        mean = VisionEncoder.from_pretrained(str(tmp_path), pooling="mean")(pixels)
    assert pooled.shape == (3, 1, 32) and tokens.shape == (3, 17, 32)
    torch.testing.assert_close(pooled[:, 0], direct_cls)
    torch.testing.assert_close(pooled[:, 0], hidden[:, 0])
    torch.testing.assert_close(tokens, hidden)
    torch.testing.assert_close(mean[:, 0], hidden[:, 1:].mean(1))


def test_pooler_only_when_the_checkpoint_trained_one(tmp_path):
    save_vit(tmp_path / "nopool", pooler=False)
    with pytest.raises(ConfigError, match="no trained pooler"):
        VisionEncoder.from_pretrained(str(tmp_path / "nopool"), pooling="pooler")
    ref = save_vit(tmp_path / "pool", pooler=True)
    enc = VisionEncoder.from_pretrained(str(tmp_path / "pool"), pooling="pooler")
    pixels = enc.preprocess(images(2))
    with torch.no_grad():
        torch.testing.assert_close(enc(pixels)[:, 0], ref(pixel_values=pixels).pooler_output)
    with pytest.raises(ConfigError, match="pooling"):
        VisionEncoder.from_pretrained(str(tmp_path / "pool"), pooling="max")


def test_weights_hash_identifies_the_weights(tmp_path):
    save_vit(tmp_path / "a", pooler=False, seed=0)
    save_vit(tmp_path / "b", pooler=False, seed=1)
    a1 = VisionEncoder.from_pretrained(str(tmp_path / "a"))
    a2 = VisionEncoder.from_pretrained(str(tmp_path / "a"))
    b = VisionEncoder.from_pretrained(str(tmp_path / "b"))
    assert a1.weights_hash() == a2.weights_hash() != b.weights_hash()
    with torch.no_grad():
        a2.model.layernorm.bias[0] += 1e-3
    assert a2.weights_hash() != a1.weights_hash()


def test_unknown_encoder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot load"):
        VisionEncoder.from_pretrained(str(tmp_path / "missing"))
