"""The tiny multi-task setting shared by the multi-task training tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import torch


def build_multitask_setup(root: Path) -> tuple[Path, Path]:
    """A tiny world with GQA/NLVR2 files, a tiny ViT + BART (untrained) and a pooled feature store."""
    from vlpeft.config import PretrainConfig, TextPretrainConfig, VitPretrainConfig, WorldConfig
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table
    from vlpeft.data.synth import generate_world
    from vlpeft.models.vision import VisionEncoder
    from vlpeft.pretrain.run import read_corpus
    from vlpeft.pretrain.text import build_bart
    from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer
    from vlpeft.pretrain.vit import build_image_processor, build_vit

    torch.manual_seed(0)
    world = root / "world"
    extra = {"extra_tasks": ["gqa", "nlvr"]}
    sizes = {"n_train": 16, "n_val": 4, "n_test": 4, "corpus_scenes": 20}  # small: the test splits are scored
    generate_world(WorldConfig(image_size=32, **sizes, **extra), world, seed=0, progress=False)
    vit = VitPretrainConfig(image_size=32, patch_size=16)
    cfg = PretrainConfig(
        width=16, layers=2, heads=2, ffn=32, vit=vit, text=TextPretrainConfig(max_positions=40)
    )
    build_vit(cfg).save_pretrained(root / "vit")
    build_image_processor(cfg).save_pretrained(root / "vit")
    tok = wrap_tokenizer(train_word_tokenizer(read_corpus(world)), "roberta")
    build_bart(cfg, tok).save_pretrained(root / "bart")
    tok.save_pretrained(root / "bart")
    encoder = VisionEncoder.from_pretrained(str(root / "vit"))
    extract_features(encoder, image_table(world), root / "features", batch_size=64)
    return world, root


def multitask_params(root: Path, routing: str):
    """Tiny multi-task params on :func:`build_multitask_setup`'s models (2 epochs, 16 samples per task)."""
    from vlpeft.config import params_from_dict

    return params_from_dict(
        {
            "model": {"vision": str(root / "vit"), "generative_backbone": str(root / "bart")},
            "multitask": {
                "epochs": 2, "seed": 1, "lr": 5e-3, "val_samples": 4,
                "batch_sizes": {"vqa": 16, "gqa": 16, "nlvr": 8, "caption": 16},
                "max_train_samples": 16, "peft": {"rank": 4, "alpha": 4.0, "routing": routing},
            },
            "evaluate": {"batch_size": 16, "max_new_tokens": 6, "spice": "off", "meteor": "off"},  # ~5 s each
            "data": {"max_caption_tokens": 12},
            "tracking": {"enabled": False},
        },
        "tiny multitask params",
    )  # fmt: skip
