"""Bottleneck adapters as a registered method: injected at the family's positions, everything else frozen.

File: ``vlpeft_adapter.safetensors`` = every trainable parameter (adapters, LayerNorms, biases) by name.
"""

from __future__ import annotations

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.adapter.layer import BottleneckAdapter, inject_adapters, task_bottleneck
from vlpeft.tuners.method_kinds import InjectedMethod
from vlpeft.tuners.targets import adapter_patterns

WEIGHTS_FILE = "vlpeft_adapter.safetensors"


def inject_configured_adapters(model: nn.Module, cfg: PeftConfig, family: str) -> list[str]:
    """The bottleneck adapters ``cfg`` asks for, at the family's positions; returns the wrapped names."""
    a = cfg.adapter
    patterns = adapter_patterns(family, list(a.positions), cfg.target_modules)

    def factory(width: int) -> nn.Module:
        def linear(i: int, o: int) -> nn.Module:
            lin = nn.Linear(i, o)
            nn.init.normal_(lin.weight, std=a.init_std)  # as BottleneckAdapter
            nn.init.zeros_(lin.bias)
            return lin

        if cfg.sharing == "single":
            return BottleneckAdapter(width, cfg.rank, cfg.routing, a.activation, a.skip, a.init_std)
        return task_bottleneck(
            lambda: linear(width, cfg.rank),
            lambda: linear(cfg.rank, width),
            cfg.sharing,
            list(cfg.tasks),
            cfg.routing,
            a.activation,
            a.skip,
        )

    return inject_adapters(model, patterns, cfg.rank, shared_per_block=a.shared_per_block, factory=factory)


METHOD = InjectedMethod(
    WEIGHTS_FILE,
    inject_configured_adapters,
    required=".adapter.",
    mismatch="adapters saved, the base model takes a different number",
)
