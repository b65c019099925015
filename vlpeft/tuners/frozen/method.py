"""The frozen "method": no parameter of the tower trains, nothing is saved but the settings file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig


class FrozenMethod:
    """``PeftMethod`` for ``frozen``."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        return model, []

    def save(self, model: nn.Module, out_dir: Path, trainable: list[str]) -> None:
        return None

    def load(
        self,
        base_model: nn.Module,
        peft_dir: Path,
        cfg: PeftConfig,
        state: dict[str, Any],
        is_trainable: bool,
    ) -> nn.Module:
        base_model.requires_grad_(False)
        return base_model


METHOD = FrozenMethod()
