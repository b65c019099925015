"""Training throughput (samples/s) of ``train_task`` on the embedded world, for VQA and captioning.

Uses the existing embedded-world artifacts when present (``--data data/synthetic --models models
--features features``); otherwise builds a fresh synthetic world in a temp dir with *untrained* backbones of
the default sizes (``pretrain`` section of params.yaml: width 128, 4 layers) — throughput does not depend
on the weights. Prints one JSON object. ``--quick`` uses a small world and one short epoch.

    .venv/bin/python bench/bench_train.py [--quick] [--threads N]
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


def build_world(tmp: Path, quick: bool) -> tuple[Path, dict[str, str], Path]:
    """A synthetic world, untrained default-size backbones and the feature store, under ``tmp``."""
    import torch

    from vlpeft.config import PretrainConfig, WorldConfig
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table
    from vlpeft.data.synth import generate_world
    from vlpeft.models.vision import VisionEncoder
    from vlpeft.pretrain.run import read_corpus
    from vlpeft.pretrain.text import build_gpt2, build_roberta
    from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer
    from vlpeft.pretrain.vit import build_image_processor, build_vit

    torch.manual_seed(0)
    world = WorldConfig(n_train=250, n_val=50, n_test=50, corpus_scenes=300) if quick else WorldConfig()
    root = tmp / "synthetic"
    generate_world(world, root, seed=0, progress=False)
    cfg = PretrainConfig()
    tok = train_word_tokenizer(read_corpus(root))
    models = {name: tmp / "models" / name for name in ("vit", "roberta", "gpt2")}
    build_vit(cfg).save_pretrained(models["vit"])
    build_image_processor(cfg).save_pretrained(models["vit"])
    for name, build in (("roberta", build_roberta), ("gpt2", build_gpt2)):
        wrapped = wrap_tokenizer(tok, name)  # type: ignore[arg-type]
        build(cfg, wrapped).save_pretrained(models[name])
        wrapped.save_pretrained(models[name])
    features = tmp / "features"
    extract_features(VisionEncoder.from_pretrained(str(models["vit"])), image_table(root), features)
    return root, {k: str(v) for k, v in models.items()}, features


def bench_task(task: str, root: Path, models: dict[str, str], features: Path, out: Path, quick: bool) -> dict:
    """One epoch of ``train_task`` (no test evaluation, no CIDEr) and its measured throughput."""
    from vlpeft.config import params_from_dict
    from vlpeft.train.run import train_task

    section = {"epochs": 1, "checkpoint_every": 0}
    if quick:
        section["max_train_samples"] = 1024
    params = params_from_dict(
        {
            "model": {
                "vision": models["vit"],
                "vqa_backbone": models["roberta"],
                "caption_backbone": models["gpt2"],
            },
            "vqa": section,
            "caption": {**section, "val_cider_images": 0},
        },
        "bench",
    )
    start = time.perf_counter()
    flat = train_task(params, task, root, features, out / task, evaluate_test=False, progress=False)
    wall = time.perf_counter() - start
    cfg = params.task(task)  # type: ignore[arg-type]
    return {
        "samples_per_s": flat["train.samples_per_s"],
        "train_samples": flat["train.samples"],
        "steps": flat["train.steps"],
        "batch_size": cfg.batch_size,
        "routing": cfg.peft.routing,
        "trainable_params": flat["model.trainable"],
        "wall_s_incl_setup_and_validation": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small world, at most 1024 samples per task")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--data", type=Path, help="existing data root (with --models and --features)")
    ap.add_argument("--models", type=Path, help="dir with vit/, roberta/, gpt2/")
    ap.add_argument("--features", type=Path, help="existing feature store")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp_dir:
        tmp = Path(tmp_dir)
        t0 = time.perf_counter()
        if args.data and args.models and args.features:
            root, features = args.data, args.features
            models = {k: str(args.models / k) for k in ("vit", "roberta", "gpt2")}
            source = "existing artifacts"
        else:
            root, models, features = build_world(tmp, args.quick)
            source = "fresh synthetic world, untrained default-size backbones"
        setup = time.perf_counter() - t0
        results = {
            task: bench_task(task, root, models, features, tmp / "runs", args.quick)
            for task in ("vqa", "caption")
        }
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "quick": args.quick,
                "source": source,
                "setup_s": round(setup, 2),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
                "cuda": torch.cuda.is_available(),
                **results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
