"""Prompt tuning as a registered method: an ``InputPrompt`` on the model, everything else frozen.

File: ``vlpeft_prompt.safetensors`` = every trainable parameter (the prompt, LayerNorms if trained) by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.prompt.encoder import PROMPT_ATTR, InputPrompt
from vlpeft.tuners.trainable import load_tensors, save_tensors, unfreeze_biases

WEIGHTS_FILE = "vlpeft_prompt.safetensors"


def add_prompt(model: nn.Module, cfg: PeftConfig) -> None:
    """Register the configured ``InputPrompt`` on ``model`` (on its device and dtype)."""
    p = cfg.prompt
    width = model.get_input_embeddings().weight
    prompt = InputPrompt(p.length, width.shape[1], p.reparam, p.mid_dim, p.init_std)
    model.add_module(PROMPT_ATTR, prompt.to(device=width.device, dtype=width.dtype))


class PromptMethod:
    """``PeftMethod`` for ``prompt`` (see the module docstring)."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        add_prompt(model, cfg)
        unfreeze_biases(model, cfg.bias, [])
        return model, [PROMPT_ATTR]

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
        base_model.requires_grad_(False)
        add_prompt(base_model, cfg)
        load_tensors(base_model, peft_dir / WEIGHTS_FILE, required=f"{PROMPT_ATTR}.")
        return base_model


METHOD = PromptMethod()
