"""Compacter as a registered method: PHM bottlenecks at the adapter positions, everything else frozen.

With ``shared_rule`` the rule ``A`` lives once on the model (``vlpeft_phm_rule``) and every PHM layer
references it. File: ``vlpeft_compacter.safetensors`` = every trainable parameter by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.errors import DataError
from vlpeft.tuners.adapter.layer import adapted_outputs, inject_adapters, task_bottleneck
from vlpeft.tuners.compacter.phm import PHMLinear, PHMRule
from vlpeft.tuners.targets import adapter_patterns
from vlpeft.tuners.trainable import load_tensors, save_tensors, unfreeze_biases

WEIGHTS_FILE = "vlpeft_compacter.safetensors"
SHARED_RULE = "vlpeft_phm_rule"


def inject_compacters(model: nn.Module, cfg: PeftConfig, family: str) -> list[str]:
    """PHM bottlenecks (rank ``cfg.rank``) at the family's adapter positions; returns the wrapped names."""
    c = cfg.compacter
    shared = None
    if c.shared_rule:
        shared = PHMRule(c.n, c.rule_init_std)
        model.add_module(SHARED_RULE, shared)

    def phm(i: int, o: int) -> PHMLinear:
        return PHMLinear(
            i,
            o,
            c.n,
            factorized=c.factorized,
            phm_rank=c.phm_rank,
            shared_rule=shared,
            rule_init_std=c.rule_init_std,
        )

    def factory(width: int) -> nn.Module:
        return task_bottleneck(
            lambda: phm(width, cfg.rank),
            lambda: phm(cfg.rank, width),
            cfg.sharing,
            list(cfg.tasks),
            cfg.routing,
            c.activation,
            c.skip,
        )

    patterns = adapter_patterns(family, ["attention", "ffn"], cfg.target_modules)
    names = inject_adapters(model, patterns, cfg.rank, factory=factory)
    ref = next(model.parameters())
    if shared is not None:
        shared.to(device=ref.device, dtype=ref.dtype)
    return names


class CompacterMethod:
    """``PeftMethod`` for ``compacter`` (see the module docstring)."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        adapted = inject_compacters(model, cfg, family)
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
        inject_compacters(base_model, cfg, state["family"])
        load_tensors(base_model, peft_dir / WEIGHTS_FILE, required=".adapter.")
        if len(adapted_outputs(base_model)) != len(state["adapted"]):
            raise DataError(
                f"{peft_dir}: {len(state['adapted'])} adapters saved, the base model takes a different number"
            )
        return base_model


METHOD = CompacterMethod()
