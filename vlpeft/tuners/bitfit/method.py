"""BitFit as a registered method: every bias trains (``peft.bias`` is implied ``all``), nothing is added.

``peft.train_layernorm`` still adds the LayerNorm weights of ``peft.layernorm_scope`` (off for BitFit proper).
File: ``vlpeft_bitfit.safetensors`` = the trainable parameters by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.trainable import load_trainables, save_tensors, unfreeze_biases

WEIGHTS_FILE = "vlpeft_bitfit.safetensors"


class BitFitMethod:
    """``PeftMethod`` for ``bitfit``."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        unfreeze_biases(model, "all", [])
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


METHOD = BitFitMethod()
