"""Helpers shared by the VL model tests."""

from __future__ import annotations

import torch

from vlpeft.config import PeftConfig


def peft(**kw) -> PeftConfig:
    """A PeftConfig with test defaults (rank 4, alpha 4)."""
    return PeftConfig(**{"rank": 4, "alpha": 4.0, **kw})


def randomize_peft(model: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised LoRA B weights random values so PEFT layers change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
