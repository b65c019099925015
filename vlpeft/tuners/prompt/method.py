"""Prompt tuning as a registered method: an ``InputPrompt`` on the model, everything else frozen.

File: ``vlpeft_prompt.safetensors`` = every trainable parameter (the prompt, LayerNorms if trained) by name.
"""

from __future__ import annotations

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.method_kinds import InjectedMethod
from vlpeft.tuners.prompt.encoder import PROMPT_ATTR, InputPrompt

WEIGHTS_FILE = "vlpeft_prompt.safetensors"


def add_prompt(model: nn.Module, cfg: PeftConfig, family: str) -> list[str]:
    """Register the configured ``InputPrompt`` on ``model`` (on its device and dtype); returns its name.

    The prompt wraps no layer, so ``peft.bias: lora_only`` unfreezes nothing for it (there is no
    ``vlpeft_prompt.base.bias``).
    """
    p = cfg.prompt
    width = model.get_input_embeddings().weight
    prompt = InputPrompt(p.length, width.shape[1], p.reparam, p.mid_dim, p.init_std)
    model.add_module(PROMPT_ATTR, prompt.to(device=width.device, dtype=width.dtype))
    return [PROMPT_ATTR]


METHOD = InjectedMethod(WEIGHTS_FILE, add_prompt, required=f"{PROMPT_ATTR}.")
