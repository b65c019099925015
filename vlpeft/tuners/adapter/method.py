"""Bottleneck adapters as a registered method: injected at the family's positions, everything else frozen.

File: ``vlpeft_adapter.safetensors`` = every trainable parameter (adapters, LayerNorms, biases) by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.errors import DataError
from vlpeft.tuners.adapter.layer import BottleneckAdapter, adapted_outputs, inject_adapters, task_bottleneck
from vlpeft.tuners.targets import adapter_patterns
from vlpeft.tuners.trainable import load_tensors, save_tensors, unfreeze_biases

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


class AdapterMethod:
    """``PeftMethod`` for ``adapter`` (see the module docstring)."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        adapted = inject_configured_adapters(model, cfg, family)
        unfreeze_biases(model, cfg.bias, [f"{n}.base.bias" for n in adapted])
        return model, adapted

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
        inject_configured_adapters(base_model, cfg, state["family"])
        load_tensors(base_model, peft_dir / WEIGHTS_FILE, required=".adapter.")
        if len(adapted_outputs(base_model)) != len(state["adapted"]):
            raise DataError(
                f"{peft_dir}: {len(state['adapted'])} adapters saved, the base model takes a different number"
            )
        return base_model


METHOD = AdapterMethod()
