"""LayerNorm-only as a registered method: the norms of ``peft.layernorm_scope`` train (whatever
``peft.train_layernorm`` says), plus the biases of ``peft.bias``. File: ``vlpeft_layernorm.safetensors``.
"""

from __future__ import annotations

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.method_kinds import TrainablesMethod
from vlpeft.tuners.trainable import unfreeze_biases, unfreeze_norms

WEIGHTS_FILE = "vlpeft_layernorm.safetensors"


def unfreeze_norms_and_biases(model: nn.Module, cfg: PeftConfig) -> None:
    """The norms of ``peft.layernorm_scope`` and the biases ``peft.bias`` names."""
    unfreeze_norms(model, cfg.layernorm_scope)
    unfreeze_biases(model, cfg.bias, [])


METHOD = TrainablesMethod(WEIGHTS_FILE, unfreeze_norms_and_biases)
