"""Checkpoints: one directory holding the model (as the task saves it) plus everything needed to resume.

Layout of a checkpoint directory (``out_dir/last``; ``out_dir/best`` has only the model part)::

    <model files>                  whatever ``save_model(model, dir)`` writes (``save_vl_model`` for tasks)
    trainer/weights.safetensors    every trainable parameter, keyed by its name in the (unwrapped) model
    trainer/optimizer.safetensors  optimizer state tensors, ``state.<param index>.<name>``
    trainer/rng.safetensors        torch CPU/CUDA and numpy RNG states
    trainer/state.json             position (epoch, next batch), global step, scheduler, optimizer layout,
                                   python/numpy RNG scalars, epoch accumulators, history, best value

A directory is published by ``vlpeft.io.atomic_dir``: written completely under a staging name, then renamed
into place, the previous checkpoint moved aside to ``.<name>.prev`` first and deleted last, so a crash at any
instant leaves either the new or the old checkpoint readable (:func:`find_checkpoint` picks the complete one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from vlpeft.errors import TrainingError
from vlpeft.io import atomic_dir, is_complete, prev_path, save_tensors
from vlpeft.train.state import capture_rng, flatten_optimizer_state, restore_rng, unflatten_optimizer_state

FORMAT = 1
SaveModel = Callable[[nn.Module, Path], None]


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name, detached, on CPU, contiguous (what a checkpoint stores)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def find_checkpoint(path: Path) -> Path | None:
    """The complete checkpoint at ``path``, or the previous one a crash left at ``.<name>.prev``, or None.

    Complete means published whole by ``vlpeft.io.atomic_dir`` (its marker is present) with a trainer state.
    """
    for candidate in (path, prev_path(path)):
        if is_complete(candidate) and (candidate / "trainer" / "state.json").is_file():
            return candidate
    return None


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    save_model: SaveModel | None = None,
) -> None:
    """Write a resumable checkpoint (model, optimizer, scheduler, RNG, ``state``) atomically at ``path``."""
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_meta = capture_rng()
    weights = trainable_state(model)
    record = {
        "format": FORMAT,
        **state,
        "scheduler": scheduler.state_dict(),
        "optimizer": opt_meta,
        "rng": rng_meta,
    }
    text = json.dumps(record, indent=1)

    def fill(tmp: Path) -> None:
        if save_model is not None:
            save_model(model, tmp)
        t = tmp / "trainer"
        t.mkdir(exist_ok=True)
        save_tensors(weights, t / "weights.safetensors")  # a failed write names its file
        save_tensors(opt_tensors, t / "optimizer.safetensors")
        save_tensors(rng_tensors, t / "rng.safetensors")
        (t / "state.json").write_text(text + "\n")

    with atomic_dir(path) as tmp:
        fill(tmp)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states from ``path``; return the loop's ``state``."""
    t = path / "trainer"
    try:
        record = json.loads((t / "state.json").read_text())
        weights = load_file(str(t / "weights.safetensors"))
        opt_tensors = load_file(str(t / "optimizer.safetensors"))
        rng_tensors = load_file(str(t / "rng.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:  # truncated, corrupt, not ours
        raise TrainingError(f"{path}: checkpoint unreadable ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise TrainingError(f"{t / 'state.json'}: unknown checkpoint format {record.get('format')!r}")
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        missing = sorted(expected - set(weights))[:3]
        extra = sorted(set(weights) - expected)[:3]
        raise TrainingError(
            f"{path}: checkpoint does not match the model's trainable parameters "
            f"(missing {missing}, unexpected {extra}); resume with the same params as the original run"
        )
    with torch.no_grad():
        for name, value in weights.items():
            if params[name].shape != value.shape:
                have = tuple(params[name].shape)
                raise TrainingError(f"{path}: {name} has shape {tuple(value.shape)}, the model has {have}")
            params[name].copy_(value)
    try:
        optimizer.load_state_dict(unflatten_optimizer_state(opt_tensors, record.pop("optimizer")))
        scheduler.load_state_dict(record.pop("scheduler"))
        restore_rng(rng_tensors, record.pop("rng"))
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:  # an edited or damaged state
        raise TrainingError(f"{t}: checkpoint state unusable ({type(exc).__name__}: {exc})") from None
    return record
