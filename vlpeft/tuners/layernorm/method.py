"""LayerNorm-only as a registered method: the norms of ``peft.layernorm_scope`` train (whatever
``peft.train_layernorm`` says), plus the biases of ``peft.bias``. File: ``vlpeft_layernorm.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.trainable import load_trainables, save_tensors, unfreeze_biases, unfreeze_norms

WEIGHTS_FILE = "vlpeft_layernorm.safetensors"


class LayerNormMethod:
    """``PeftMethod`` for ``layernorm``."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        unfreeze_norms(model, cfg.layernorm_scope)
        unfreeze_biases(model, cfg.bias, [])
        return model, []

    def save(self, model: nn.Module, out_dir: Path, trainable: list[str]) -> None:
        save_tensors(model, trainable, out_dir / WEIGHTS_FILE)

    def load(
        self,
        base_model: nn.Module,
        peft_dir: Path,
        cfg: PeftConfig,
        state: dict[str, Any],
        is_trainable: bool,
    ) -> nn.Module:
        load_trainables(base_model, peft_dir / WEIGHTS_FILE, state["trainable"])
        return base_model


METHOD = LayerNormMethod()
