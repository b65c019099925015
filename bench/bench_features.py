"""Benchmark: feature extraction throughput; VQA PEFT epoch time from cached features vs encoder in the loop.

Prints one JSON object. Everything is built on the spot (no downloads): a small synthetic world, a fresh
128-wide RoBERTa with the world's word tokenizer, the default tiny ViT (64 px, patch 16, width 128, 4 layers)
and a ViT-B-sized encoder (224 px, patch 16, width 768, 12 layers, 12 heads, FFN 3072), both randomly
initialised (timing does not depend on the weights).

1. ``extraction``: images/s of ``extract_features`` end to end (read PNG, preprocess, forward, write the
   store) for each encoder, and of the forward pass alone.
2. ``vqa_epoch``: one epoch of VQA LoRA training (``vlpeft.models.build_vl_model``, ``mul`` routing, linear
   projection 768 -> 128, frozen ViT-B) on a small question sample, with the visual input coming from the
   ViT-B feature store (``visual_input: features``) or from the images through ViT-B in the loop
   (``visual_input: images``), both through the trainer's own ``VisualSource``. ``speedup`` = in-loop /
   cached; the target is >= 2. ``speedup_incl_extraction`` charges the one-time extraction to a single epoch.

Usage: ``python bench/bench_features.py [--quick] [--threads N]`` (the integrator runs the full one on a quiet
machine; ``--quick`` is a smoke run of about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

SIZES = {
    "quick": {"world_images": 96, "vitb_images": 16, "questions": 32, "batch_size": 16},
    "full": {"world_images": 1000, "vitb_images": 64, "questions": 256, "batch_size": 32},
}


def build_world(root: Path, n_images: int) -> Path:
    from vlpeft.config import WorldConfig
    from vlpeft.data.synth import generate_world

    n_train = max(1, n_images - 8)
    generate_world(
        WorldConfig(n_train=n_train, n_val=4, n_test=4, corpus_scenes=200), root, seed=0, progress=False
    )
    return root


def build_backbones(root: Path, models: Path) -> dict[str, str]:
    """Random-init tiny ViT, ViT-B-sized ViT and a 128-wide RoBERTa + tokenizer, saved like hub models."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    from vlpeft.config import PretrainConfig
    from vlpeft.pretrain.run import read_corpus
    from vlpeft.pretrain.text import build_roberta
    from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer
    from vlpeft.pretrain.vit import build_image_processor, build_vit

    torch.manual_seed(0)
    cfg = PretrainConfig()
    paths = {k: str(models / k) for k in ("vit-tiny", "vit-b", "roberta")}
    build_vit(cfg).save_pretrained(paths["vit-tiny"])
    build_image_processor(cfg).save_pretrained(paths["vit-tiny"])
    vitb = ViTConfig(
        image_size=224,
        patch_size=16,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    )
    ViTModel(vitb, add_pooling_layer=False).save_pretrained(paths["vit-b"])
    ViTImageProcessorPil(
        size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(paths["vit-b"])
    tok = wrap_tokenizer(train_word_tokenizer(read_corpus(root)), "roberta")
    build_roberta(cfg, tok).save_pretrained(paths["roberta"])
    tok.save_pretrained(paths["roberta"])
    return paths


def bench_extraction(encoder_path: str, items: list, out: Path, batch_size: int) -> dict[str, float]:
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import load_image
    from vlpeft.models.vision import VisionEncoder

    enc = VisionEncoder.from_pretrained(encoder_path)
    t0 = time.perf_counter()
    extract_features(enc, items, out, kind="pooled", batch_size=batch_size)
    total = time.perf_counter() - t0
    pixels = enc.preprocess([load_image(p) for _, p in items[:batch_size]])
    with torch.inference_mode():
        enc(pixels[:2])  # warm-up
        t0 = time.perf_counter()
        enc(pixels)
        fwd = time.perf_counter() - t0
    return {
        "images": len(items),
        "images_per_s": len(items) / total,
        "forward_images_per_s": len(pixels) / fwd,
        "seconds": total,
        "width": enc.width,
        "image_size": enc.image_size,
    }


def vqa_epoch(
    paths: dict[str, str], root: Path, store_dir: Path, mode: str, n_q: int, bs: int
) -> dict[str, float]:
    """One epoch of VQA LoRA training; returns the epoch time and the mean loss."""
    from vlpeft.config import ModelConfig, PeftConfig
    from vlpeft.data.features import FeatureStore
    from vlpeft.data.vocab import AnswerVocab
    from vlpeft.data.vqa import load_vqa
    from vlpeft.models import build_vl_model
    from vlpeft.train.inputs import VisualSource

    store = FeatureStore(store_dir)
    records = [r for r in load_vqa(root, "train") if r.image_id in store][:n_q]
    vocab = AnswerVocab.build(records)
    torch.manual_seed(0)
    model_cfg = ModelConfig(vision=paths["vit-b"], vqa_backbone=paths["roberta"], projection="linear")
    model = build_vl_model(
        "vqa", model_cfg, PeftConfig(method="lora", rank=8, routing="mul"), n_answers=len(vocab)
    )
    source = VisualSource(model, mode, store if mode == "features" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3)
    model.train()
    losses = []
    t0 = time.perf_counter()
    for start in range(0, len(records), bs):
        batch_records = records[start : start + bs]
        enc = model.tokenizer([r.question for r in batch_records], padding=True, return_tensors="pt")
        batch = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "targets": torch.stack([vocab.target_vector(r.answers) for r in batch_records]),
            **source([r.image_id for r in batch_records], [r.path for r in batch_records]),
        }
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "questions": len(records),
        "images": len({r.image_id for r in records}),
        "batch_size": bs,
        "mean_loss": sum(losses) / len(losses),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (about a minute)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES["quick" if args.quick else "full"]
    from vlpeft.data.images import image_table

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        tmp = Path(tmp)
        root = build_world(tmp / "world", size["world_images"])
        paths = build_backbones(root, tmp / "models")
        table = image_table(root)
        train_items = [it for it in table if "/train/" in str(it[1])]
        extraction = {
            "tiny_vit_64px": bench_extraction(paths["vit-tiny"], table, tmp / "f-tiny", 256),
            "vit_b_224px": bench_extraction(
                paths["vit-b"], train_items[: size["vitb_images"]], tmp / "f-vitb", 16
            ),
        }
        cached = vqa_epoch(paths, root, tmp / "f-vitb", "features", size["questions"], size["batch_size"])
        in_loop = vqa_epoch(paths, root, tmp / "f-vitb", "images", size["questions"], size["batch_size"])
    vitb = extraction["vit_b_224px"]
    one_time = vitb["seconds"] / vitb["images"] * cached["images"]  # extracting just the sampled images
    result = {
        "benchmark": "bench_features",
        "mode": "quick" if args.quick else "full",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "extraction": extraction,
        "vqa_epoch": {
            "model": "build_vl_model vqa: RoBERTa 128 + LoRA r8 mul + linear projection; frozen ViT-B",
            "cached_features": cached,
            "encoder_in_loop_224px": in_loop,
            "speedup": in_loop["seconds"] / cached["seconds"],
            "speedup_incl_extraction": in_loop["seconds"] / (cached["seconds"] + one_time),
            # Same seed, same batches: equal losses show the cache feeds exactly what the encoder computes.
            "loss_abs_diff": abs(in_loop["mean_loss"] - cached["mean_loss"]),
            "target_speedup": 2.0,
        },
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
