"""Fixtures for the task-level training tests: tiny untrained backbones and a feature store on the tiny world.

Built with the pretrain module's own builders (same tokenizer, same model classes as ``vlpeft pretrain``)
but without training them: the tests check plumbing, formats, resume and metrics, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlpeft.config import Params, PretrainConfig, TextPretrainConfig, VitPretrainConfig


@pytest.fixture(scope="session")
def train_backbones(tiny_world, tmp_path_factory) -> dict[str, Path]:
    """Saved tiny backbones (vit, roberta, gpt2; width 16) and a pooled feature store of every image."""
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table
    from vlpeft.models.vision import VisionEncoder
    from vlpeft.pretrain.run import read_corpus
    from vlpeft.pretrain.text import build_gpt2, build_roberta
    from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer
    from vlpeft.pretrain.vit import build_image_processor, build_vit

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("train_backbones")
    cfg = PretrainConfig(
        width=16, layers=1, heads=2, ffn=32,
        vit=VitPretrainConfig(image_size=32, patch_size=16), text=TextPretrainConfig(max_positions=40),
    )  # fmt: skip
    lines = read_corpus(Path(tiny_world))
    tok = train_word_tokenizer(lines)
    paths = {name: root / name for name in ("vit", "roberta", "gpt2", "features")}
    build_vit(cfg).save_pretrained(paths["vit"])
    build_image_processor(cfg).save_pretrained(paths["vit"])
    for name, build, style in (("roberta", build_roberta, "roberta"), ("gpt2", build_gpt2, "gpt2")):
        wrapped = wrap_tokenizer(tok, style)
        build(cfg, wrapped).save_pretrained(paths[name])
        wrapped.save_pretrained(paths[name])
    encoder = VisionEncoder.from_pretrained(str(paths["vit"]))
    extract_features(encoder, image_table(tiny_world), paths["features"], batch_size=64)
    return paths


def tiny_params_dict(backbones: dict[str, Path]) -> dict:
    """A params dict for fast task runs on the tiny world (2 epochs, batch 16, rank 4, small eval)."""
    train = {"epochs": 2, "batch_size": 16, "seed": 3, "peft": {"rank": 4, "alpha": 4.0}}
    return {
        "model": {
            "vision": str(backbones["vit"]),
            "vqa_backbone": str(backbones["roberta"]),
            "caption_backbone": str(backbones["gpt2"]),
        },
        "vqa": {**train, "peft": {**train["peft"], "routing": "mul"}},
        "caption": {**train, "val_cider_images": 4, "peft": {**train["peft"], "routing": "vl"}},
        "evaluate": {"batch_size": 16, "max_new_tokens": 8, "spice": "off"},
        "data": {"max_caption_tokens": 12},
    }


@pytest.fixture
def tiny_params(train_backbones) -> Params:
    """Validated ``Params`` of :func:`tiny_params_dict` (a fresh object per test: mutate freely)."""
    from vlpeft.config import params_from_dict

    return params_from_dict(tiny_params_dict(train_backbones), "tiny params")


@pytest.fixture(scope="session")
def mt_setup(tmp_path_factory) -> tuple[Path, Path]:
    """(world, root) of the tiny multi-task setting: GQA/NLVR2 files, tiny ViT + BART, pooled features."""
    from multitask_helpers import build_multitask_setup

    return build_multitask_setup(tmp_path_factory.mktemp("mt"))
