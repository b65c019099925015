"""Image-only pretraining of the tiny ViT: multi-label BCE on scene attribute labels.

The pooled feature is the CLS token after the encoder's final LayerNorm (``last_hidden_state[:, 0]``); the
model is a ``ViTModel(add_pooling_layer=False)`` so no checkpoint ever carries an untrained pooler. The
linear attribute head is only a training device and is not saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

from vlpeft.config import PretrainConfig
from vlpeft.pretrain.common import make_optimizer

# The processor's normalisation; ``normalize`` below must agree with it exactly (tested).
MEAN = STD = (0.5, 0.5, 0.5)


def build_vit(cfg: PretrainConfig) -> ViTModel:
    """A fresh ViT encoder (no pooler) of the configured width, image and patch size; dropout 0."""
    config = ViTConfig(
        image_size=cfg.vit.image_size,
        patch_size=cfg.vit.patch_size,
        hidden_size=cfg.width,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTModel(config, add_pooling_layer=False)


def build_image_processor(cfg: PretrainConfig) -> ViTImageProcessorPil:
    """The preprocessing saved beside the ViT: bilinear resize to the ViT size, [0, 1], mean/std 0.5."""
    size = cfg.vit.image_size
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": size, "width": size},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(MEAN),
        image_std=list(STD),
    )


def images_to_uint8(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """Stack RGB images as a uint8 tensor (N, 3, size, size), bilinear-resized like the processor."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float pixel values exactly as the saved image processor makes them."""
    x = batch.float() * (1 / 255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def pooled(vit: ViTModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """The final-LayerNorm CLS token, (B, d)."""
    return vit(pixel_values=pixel_values).last_hidden_state[:, 0]


def label_metrics(
    logits: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor, blocks: Mapping[str, Sequence[int]]
) -> dict[str, object]:
    """Bitwise accuracy of ``logits > 0`` vs the label prior (each bit's majority), overall and by block.

    ``prior`` is the per-bit positive rate on the training set. For a block whose name contains ``count``
    (a one-hot of the object count) the exact count accuracy (argmax) is reported too.
    """
    pred = logits > 0
    truth = labels > 0.5
    prior_pred = (prior > 0.5).expand_as(truth)
    out: dict[str, object] = {
        "bitwise_accuracy": (pred == truth).float().mean().item(),
        "prior_bitwise_accuracy": (prior_pred == truth).float().mean().item(),
    }
    per_block = {}
    for name, cols in blocks.items():
        idx = torch.as_tensor(list(cols), dtype=torch.long)
        per_block[name] = {
            "model": (pred[:, idx] == truth[:, idx]).float().mean().item(),
            "prior": (prior_pred[:, idx] == truth[:, idx]).float().mean().item(),
        }
        if "count" in name:
            exact = logits[:, idx].argmax(-1) == labels[:, idx].argmax(-1)
            out["count_accuracy"] = exact.float().mean().item()
    out["blocks"] = per_block
    return out


def pretrain_vit(
    vit: ViTModel,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    cfg: PretrainConfig,
    generator: torch.Generator,
    device: torch.device,
    blocks: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, object]:
    """Train ``vit`` + a linear head with BCE on multi-label targets; return validation metrics.

    ``train_x``/``val_x`` are uint8 images (N, 3, S, S) at the ViT's size, ``train_y``/``val_y`` 0/1 labels
    (N, K). AdamW (lr, wd from ``cfg.vit``), batch ``cfg.vit.batch_size``, 5 % warm-up then cosine.
    """
    vc = cfg.vit
    n, k = train_y.shape
    head = torch.nn.Linear(vit.config.hidden_size, k)
    both = torch.nn.ModuleDict({"vit": vit, "head": head}).to(device).train()
    bs = min(vc.batch_size, n)
    steps_per_epoch = n // bs  # drop the ragged last batch: constant batch statistics
    opt, sched = make_optimizer(both, vc.lr, vc.weight_decay, steps_per_epoch * vc.epochs)
    train_y = train_y.float()
    bar = tqdm(range(vc.epochs), desc="vit pretrain", unit="epoch")
    for _ in bar:
        order = torch.randperm(n, generator=generator)
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * bs : (s + 1) * bs]
            x = normalize(train_x[idx]).to(device)
            logits = head(pooled(vit, x))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, train_y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(both.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses) / len(losses):.4f}")
    both.eval()
    with torch.inference_mode():
        logits = torch.cat(
            [
                head(pooled(vit, normalize(val_x[i : i + 256]).to(device))).cpu()
                for i in range(0, len(val_x), 256)
            ]
        )
        val_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, val_y.float()).item()
    prior = train_y.mean(0, keepdim=True)
    metrics = label_metrics(logits, val_y.float(), prior, blocks or {"all": range(k)})
    return {"train_loss": sum(losses) / len(losses), "val_loss": val_loss, **metrics}
