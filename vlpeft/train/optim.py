"""AdamW over the trainable parameters and the warm-up + decay learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed and a non-decayed group.

    Biases, LayerNorm/norm weights and every other 1-D tensor get no weight decay (the usual transformer
    recipe: decaying a norm gain towards 0 only hurts). Frozen parameters are left out entirely, so the
    optimizer state holds only what is trained.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lowered = name.lower()
        if p.ndim < 2 or lowered.endswith(".bias") or "norm" in lowered or ".ln" in lowered:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only (foreach off: same arithmetic on every device count)."""
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): warm-up, then linear/cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / remaining)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {schedule!r} (allowed: linear, cosine)")


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, schedule: str
) -> LambdaLR:
    """Warm-up over ``warmup_ratio`` of all steps, then linear or cosine decay to zero at ``total_steps``."""
    warmup = round(warmup_ratio * total_steps)
    return LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, schedule))
