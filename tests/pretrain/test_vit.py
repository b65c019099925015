"""ViT pretraining: preprocessing equal to the saved image processor, metrics by hand, toy learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlpeft.config import PretrainConfig
from vlpeft.pretrain.vit import (
    build_image_processor,
    build_vit,
    images_to_uint8,
    label_metrics,
    normalize,
    pretrain_vit,
)

COLORS = np.array([[220, 30, 30], [30, 30, 220], [30, 200, 30]], dtype=np.uint8)


def toy_images(n: int, size: int = 32, seed: int = 0) -> tuple[list[Image.Image], torch.Tensor]:
    """A coloured square in one quadrant on noisy grey; labels = quadrant one-hot + colour one-hot."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    half = size // 2
    for _ in range(n):
        q, c = rng.integers(4), rng.integers(3)
        img = np.clip(200 + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        y0, x0 = (q // 2) * half + 3, (q % 2) * half + 3
        img[y0 : y0 + half - 6, x0 : x0 + half - 6] = COLORS[c]
        images.append(Image.fromarray(img))
        labels.append(np.eye(4)[q].tolist() + np.eye(3)[c].tolist())
    return images, torch.tensor(labels, dtype=torch.float32)


def test_fast_preprocessing_equals_the_saved_processor(tmp_path):
    from transformers import AutoImageProcessor

    cfg = PretrainConfig(vit={"image_size": 32})
    build_image_processor(cfg).save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    images, _ = toy_images(3, size=32)
    images.append(toy_images(1, size=48)[0][0])  # a different size: both resize bilinearly to 32
    ref = processor(images=images, return_tensors="pt")["pixel_values"]
    ours = normalize(images_to_uint8(images, 32))
    assert ours.shape == ref.shape == (4, 3, 32, 32)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_label_metrics_by_hand():
    labels = torch.tensor([[1, 0, 0, 1.0], [0, 1, 1, 1.0]])
    logits = torch.tensor([[2.0, -1, -3, 1], [-2, 1, -1, 3]])  # one wrong bit (row 1, col 2)
    prior = torch.tensor([[0.9, 0.2, 0.4, 0.6]])  # predicts 1, 0, 0, 1
    m = label_metrics(logits, labels, prior, {"count": [0, 1], "rest": [2, 3]})
    assert m["bitwise_accuracy"] == pytest.approx(7 / 8)
    assert m["prior_bitwise_accuracy"] == pytest.approx(5 / 8)  # wrong: row 1 cols 0, 1, 2
    assert m["blocks"]["count"] == {"model": 1.0, "prior": 0.5}
    assert m["blocks"]["rest"] == {"model": 0.75, "prior": 0.75}
    assert m["count_accuracy"] == 1.0


def test_vit_learns_toy_attributes_without_a_pooler():
    cfg = PretrainConfig(
        width=32,
        layers=1,
        heads=2,
        ffn=64,
        vit={"image_size": 32, "patch_size": 8, "epochs": 8, "batch_size": 16},
    )
    torch.manual_seed(0)
    vit = build_vit(cfg)
    assert vit.pooler is None
    images, labels = toy_images(160)
    x = images_to_uint8(images, 32)
    blocks = {"quadrant": range(4), "count_like_colour": range(4, 7)}
    m = pretrain_vit(
        vit,
        x[:128],
        labels[:128],
        x[128:],
        labels[128:],
        cfg,
        torch.Generator().manual_seed(0),
        torch.device("cpu"),
        blocks,
    )
    assert m["prior_bitwise_accuracy"] < 0.8
    assert m["bitwise_accuracy"] > m["prior_bitwise_accuracy"] + 0.1
    assert m["val_loss"] < 0.5
    assert set(m["blocks"]) == set(blocks)
