"""Full fine-tuning as a registered method. File: ``vlpeft_full.safetensors`` = every parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.trainable import load_tensors, save_tensors

WEIGHTS_FILE = "vlpeft_full.safetensors"


class FullMethod:
    """``PeftMethod`` for ``full``: nothing injected, everything trainable."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(True)
        return model, []

    def save(self, model: nn.Module, out_dir: Path, trainable: list[str]) -> None:
        save_tensors(model, [n for n, _ in model.named_parameters()], out_dir / WEIGHTS_FILE)

    def load(
        self,
        base_model: nn.Module,
        peft_dir: Path,
        cfg: PeftConfig,
        state: dict[str, Any],
        is_trainable: bool,
    ) -> nn.Module:
        load_tensors(base_model, peft_dir / WEIGHTS_FILE, required="")
        return base_model


METHOD = FullMethod()
