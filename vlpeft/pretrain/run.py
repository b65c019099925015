"""``vlpeft pretrain``: tokenizer + tiny ViT + RoBERTa (MLM) + GPT-2 (CLM) for the embedded world.

Reads ``<data>/corpus.txt`` (text) and the train/val images with ``scenes.json`` (attribute labels), trains
each backbone, and writes ``<out>/vit``, ``<out>/roberta``, ``<out>/gpt2`` with ``save_pretrained`` (plus the
image processor / tokenizer and a ``vlpeft_pretrain.json`` provenance file) and the metrics JSON. Nothing is
written until all requested parts have trained; each model directory then appears atomically.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlpeft.config import Params, params_to_dict
from vlpeft.errors import DataError
from vlpeft.io import atomic_dir, read_json, write_json
from vlpeft.pretrain import text, vit
from vlpeft.pretrain.common import default_device, seed_everything
from vlpeft.pretrain.tokenizer import train_word_tokenizer, wrap_tokenizer

PARTS: tuple[str, ...] = ("vit", "roberta", "gpt2")  # the default set (`vlpeft pretrain` without --only)
OPTIONAL_PARTS: tuple[str, ...] = ("bart",)  # the generative setting's backbone: only when asked for
ALL_PARTS: tuple[str, ...] = PARTS + OPTIONAL_PARTS
PROVENANCE = "vlpeft_pretrain.json"
MAX_VAL_LINES = 2000


# Text part -> (builder, pretraining objective): MLM, causal LM, denoising.
TEXT_OBJECTIVES = {
    "roberta": (text.build_roberta, text.pretrain_mlm),
    "gpt2": (text.build_gpt2, text.pretrain_clm),
    "bart": (text.build_bart, text.pretrain_denoise),
}


def read_corpus(root: Path) -> list[str]:
    """Non-empty lines of ``<root>/corpus.txt``."""
    path = root / "corpus.txt"
    if not path.is_file():
        raise DataError(
            f"{path}: text corpus not found (run `vlpeft data synth`; pretraining is for the synthetic world)"
        )
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) < 2:
        raise DataError(f"{path}: the corpus needs at least 2 non-empty lines, found {len(lines)}")
    return lines


def split_lines(lines: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Shuffle deterministically; hold out 5 % (at least 1, at most 2000 lines) for validation."""
    order = np.random.default_rng(seed).permutation(len(lines))
    n_val = min(MAX_VAL_LINES, max(1, len(lines) // 20))
    return [lines[i] for i in order[n_val:]], [lines[i] for i in order[:n_val]]


def load_attribute_data(root: Path, image_size: int) -> dict[str, Any]:
    """uint8 images (N, 3, S, S) and 0/1 attribute labels of the train and val splits, plus block slices."""
    from vlpeft.data.images import load_image, split_images
    from vlpeft.data.scenes import attribute_blocks, attribute_labels

    scenes_path = root / "scenes.json"
    data = read_json(scenes_path, "scene file")
    scenes = data.get("scenes") if isinstance(data, dict) else None
    if not isinstance(scenes, list):
        raise DataError(f"{scenes_path}: missing list field 'scenes'")
    by_id = {}
    for i, scene in enumerate(scenes):
        if not isinstance(scene, dict) or "image_id" not in scene or "objects" not in scene:
            raise DataError(f"{scenes_path}: scene {i}: missing field 'image_id' or 'objects'")
        by_id[int(scene["image_id"])] = scene
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        paths = split_images(root, split)
        missing = [i for i in paths if i not in by_id]
        if missing:
            raise DataError(f"{scenes_path}: no scene for {split} image id {missing[0]}")
        ids = sorted(paths)
        out[f"{split}_x"] = vit.images_to_uint8([load_image(paths[i]) for i in ids], image_size)
        out[f"{split}_y"] = torch.from_numpy(np.stack([attribute_labels(by_id[i]) for i in ids]))
    out["blocks"] = {name: range(s.start, s.stop) for name, s in attribute_blocks().items()}
    return out


def health_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The flat pretraining health figure DVC shows: ``ViT``, the validation bitwise attribute accuracy.

    Healthy is clearly above the label prior (about 0.84 in the embedded world; 0.90 or more after 20 epochs);
    near the prior the features are empty and every visual variant looks blind. One figure (3 decimals) keeps
    ``dvc metrics show`` narrow; the text models' losses and every block are in the full metrics file.
    """
    vit_metrics = metrics.get("vit")
    return {"ViT": round(float(vit_metrics["bitwise_accuracy"]), 3)} if vit_metrics else {}


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrain_backbones(
    params: Params,
    data_root: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path | None = None,
    parts: Sequence[str] = PARTS,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train the requested backbones (``vit``, ``roberta``, ``gpt2``) and save them under ``out_dir``.

    Seeded by ``params.seed`` (each part independently, so training one part alone gives the same model).
    Returns the metrics dict that is also written to ``metrics_path`` when given.
    """
    root, out = Path(data_root), Path(out_dir)
    unknown = [p for p in parts if p not in ALL_PARTS]
    if unknown or not parts:
        raise DataError(f"pretrain parts {list(parts)!r}: choose from {', '.join(ALL_PARTS)}")
    cfg, device = params.pretrain, device or default_device()
    metrics: dict[str, Any] = {"seconds": {}}
    models: dict[str, tuple[Any, Any]] = {}  # part -> (model, processor or tokenizer)
    provenance: dict[str, Any] = {
        "seed": params.seed,
        "pretrain": params_to_dict(params)["pretrain"],
        "data_root": str(root),
    }
    world = root / "world.json"
    if world.is_file():
        provenance["world_json_sha256"] = _file_sha256(world)

    if "vit" in parts:
        t0 = time.perf_counter()
        data = load_attribute_data(root, cfg.vit.image_size)
        generator = seed_everything(params.seed)
        model = vit.build_vit(cfg)
        metrics["vit"] = vit.pretrain_vit(
            model,
            data["train_x"],
            data["train_y"],
            data["val_x"],
            data["val_y"],
            cfg,
            generator,
            device,
            data["blocks"],
        )
        metrics["vit"]["n_train_images"] = len(data["train_x"])
        models["vit"] = (model.cpu(), vit.build_image_processor(cfg))
        metrics["seconds"]["vit"] = time.perf_counter() - t0

    if any(p in parts for p in ("roberta", "gpt2", "bart")):
        lines = read_corpus(root)
        provenance["corpus_sha256"] = _file_sha256(root / "corpus.txt")
        train_lines, val_lines = split_lines(lines, params.seed)
        base = train_word_tokenizer(train_lines)
        metrics["tokenizer"] = {"vocab_size": base.get_vocab_size(), "corpus_lines": len(lines)}
        for part, style in (("roberta", "roberta"), ("gpt2", "gpt2"), ("bart", "roberta")):
            if part not in parts:
                continue
            t0 = time.perf_counter()
            tok = wrap_tokenizer(base, style)
            train_ids = text.encode_lines(train_lines, tok, cfg.text.max_positions)
            val_ids = text.encode_lines(val_lines, tok, cfg.text.max_positions)
            generator = seed_everything(params.seed + ALL_PARTS.index(part))
            build, fit = TEXT_OBJECTIVES[part]
            model = build(cfg, tok)
            metrics[part] = fit(model, tok, train_ids, val_ids, cfg, generator, device)
            models[part] = (model.cpu(), tok)
            metrics["seconds"][part] = time.perf_counter() - t0

    for part, (model, extra) in models.items():
        with atomic_dir(out / part) as tmp:
            model.save_pretrained(tmp)
            extra.save_pretrained(tmp)
            write_json(tmp / PROVENANCE, {**provenance, "part": part, "metrics": metrics[part]})
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    return metrics
