"""Small helpers shared by the pretraining loops: seeding, the learning-rate schedule, the device."""

from __future__ import annotations

import math
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order and masking."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def warmup_cosine(step: int, total: int, warmup_ratio: float = 0.05) -> float:
    """LR multiplier: linear warm-up over ``warmup_ratio * total`` steps, then cosine decay to 0."""
    warmup = max(1, round(warmup_ratio * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases, norms and embeddings-like 1-d tensors) with warm-up + cosine."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total_steps))
    return opt, sched


def default_device() -> torch.device:
    """CUDA when present, else CPU (the pretraining code is device-agnostic)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
