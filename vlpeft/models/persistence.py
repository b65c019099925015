"""Saving and loading VL models: safetensors weights, peft adapter files, one JSON with everything else.

Directory written by ``save_vl_model`` (replaced atomically; backbones are referenced by path, not copied)::

    vlpeft_model.json       {"format": "vlpeft-model", "version": 1, "task", "family", "model": ModelConfig,
                             "peft": PeftConfig, "n_answers", "vision_pooling", "vision_attached",
                             "backbones": {"language": {"path", "resolved"}, "vision": {"path", "resolved"}},
                             "trainable": [names of the VL-model parameters that were trainable]}
    lm_peft/                the language tower: ``vlpeft.tuners.save_peft`` (peft's adapter_config.json +
                            adapter_model.safetensors for LoRA, our adapter weights, routing settings)
    model.safetensors       every other trainable parameter (VQA head, projection, vision tower when trained),
                            under its ``VLModel`` parameter name

``load_vl_model`` reloads the backbones, restores the language tower with ``vlpeft.tuners.load_peft`` (routed
layers always come back routed), rebuilds the VL model around it and loads ``model.safetensors`` strictly.
The loaded model has the same trainable set as the saved one (so training can resume from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vlpeft.config import ModelConfig, PeftConfig
from vlpeft.errors import DataError
from vlpeft.io import atomic_dir, read_json, refuse_pickles, save_tensors, write_json
from vlpeft.models.base import VLModel
from vlpeft.tasks import FAMILY_BACKBONE

MODEL_FILE = "vlpeft_model.json"
WEIGHTS_FILE = "model.safetensors"
LM_DIR = "lm_peft"
FORMAT = "vlpeft-model"


def _backbone_ref(path: str) -> dict[str, str | None]:
    p = Path(path)
    return {"path": path, "resolved": str(p.resolve()) if p.exists() else None}


def _pick(ref: dict[str, Any]) -> str:
    """The backbone path as configured when it exists here, else the absolute path it had when saved."""
    path, resolved = ref.get("path"), ref.get("resolved")
    if path and Path(path).exists():
        return str(path)
    if resolved and Path(resolved).exists():
        return str(resolved)
    return str(path)  # a hub id, or missing: the loader raises a clear error naming it


def save_vl_model(model: VLModel, out_dir: str | Path) -> Path:
    """Save ``model`` to ``out_dir`` (see the module docstring); returns the directory."""
    from vlpeft.tuners import save_peft

    out_dir = Path(out_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    own = {
        n: p.detach().to("cpu").contiguous().clone()
        for n, p in model.named_parameters()
        if p.requires_grad and not n.startswith("lm.")
    }
    meta = {
        "format": FORMAT,
        "version": 1,
        "task": model.task,
        "family": model.family,
        "model": model.model_cfg.model_dump(mode="json"),
        "peft": model.peft_cfg.model_dump(mode="json"),
        "n_answers": getattr(model, "n_answers", None),
        "vision_pooling": model.vision_pooling,
        "vision_attached": model.vision is not None,
        "backbones": {
            "language": _backbone_ref(model.lm_path),
            "vision": _backbone_ref(model.model_cfg.vision),
        },
        "trainable": trainable,
    }
    with atomic_dir(out_dir) as tmp:
        save_peft(model.lm, tmp / LM_DIR)
        save_tensors(own, tmp / WEIGHTS_FILE, metadata={"format": FORMAT})  # a failed write names the file
        write_json(tmp / MODEL_FILE, meta)
    return out_dir


def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    """The ``vlpeft_model.json`` of a saved model (``DataError`` when missing or not ours)."""
    path = Path(model_dir) / MODEL_FILE
    meta = read_json(path, "vlpeft model description (not a save_vl_model directory?)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a vlpeft model description")
    return meta


def load_vl_model(model_dir: str | Path, device: str | torch.device = "cpu") -> VLModel:
    """Rebuild a model saved by ``save_vl_model`` on ``device`` (in eval mode)."""
    from vlpeft.models.backbones import load_language_backbone
    from vlpeft.models.factory import build_vl_model
    from vlpeft.tuners import load_peft

    model_dir = Path(model_dir)
    meta = read_model_meta(model_dir)
    refuse_pickles(model_dir)  # peft would torch.load an adapter_model.bin it finds there
    task = meta["task"]
    model_cfg = ModelConfig.model_validate(meta["model"])
    peft_cfg = PeftConfig.model_validate(meta["peft"])
    lm_path = _pick(meta["backbones"]["language"])
    vision_path = _pick(meta["backbones"]["vision"])
    model_cfg = model_cfg.model_copy(update={FAMILY_BACKBONE[task]: lm_path, "vision": vision_path})
    lm = load_peft(load_language_backbone(task, lm_path), model_dir / LM_DIR, is_trainable=True)
    model = build_vl_model(
        task,
        model_cfg,
        peft_cfg,
        meta.get("n_answers"),
        with_vision=bool(meta.get("vision_attached")),
        vision_pooling=meta.get("vision_pooling", "cls"),
        lm=lm,
    )
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise DataError(f"{weights}: weights file not found")
    tensors = load_file(str(weights))
    params = dict(model.named_parameters())
    expected = {n for n in meta["trainable"] if not n.startswith("lm.")}
    if set(tensors) != expected or not expected <= set(params):
        bad = sorted(set(tensors) ^ expected) or sorted(expected - set(params))
        raise DataError(f"{weights}: parameters do not match the saved model ({bad[:3]})")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    saved_trainable = set(meta["trainable"])
    for name, p in model.named_parameters():
        p.requires_grad_(name in saved_trainable)
    return model.to(device).eval()
