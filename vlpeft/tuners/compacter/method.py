"""Compacter as a registered method: PHM bottlenecks at the adapter positions, everything else frozen.

With ``shared_rule`` the rule ``A`` lives once on the model (``vlpeft_phm_rule``) and every PHM layer
references it. File: ``vlpeft_compacter.safetensors`` = every trainable parameter by name.
"""

from __future__ import annotations

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.tuners.adapter.layer import inject_adapters, task_bottleneck
from vlpeft.tuners.compacter.phm import PHMLinear, PHMRule
from vlpeft.tuners.method_kinds import InjectedMethod
from vlpeft.tuners.targets import adapter_patterns

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


METHOD = InjectedMethod(
    WEIGHTS_FILE,
    inject_compacters,
    required=".adapter.",
    mismatch="adapters saved, the base model takes a different number",
)
