"""BitFit as a registered method: every bias trains (``peft.bias`` is implied ``all``), nothing is added.

``peft.train_layernorm`` still adds the LayerNorm weights of ``peft.layernorm_scope`` (off for BitFit proper).
File: ``vlpeft_bitfit.safetensors`` = the trainable parameters by name.
"""

from __future__ import annotations

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.method_kinds import TrainablesMethod
from vlpeft.tuners.trainable import unfreeze_biases

WEIGHTS_FILE = "vlpeft_bitfit.safetensors"


def unfreeze_all_biases(model: nn.Module, cfg: PeftConfig) -> None:
    """BitFit's trainable set: every bias of the backbone."""
    unfreeze_biases(model, "all", [])


METHOD = TrainablesMethod(WEIGHTS_FILE, unfreeze_all_biases)
