"""Hyperformer as a registered method: hypernetworks registered once on the model (``vlpeft_hyper``),
``HyperAdapter`` wrappers at every sublayer output of both stacks, everything else frozen.

File: ``vlpeft_hyperformer.safetensors`` = every trainable parameter by name.
"""

from __future__ import annotations

import re

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError
from vlpeft.tuners.adapter.layer import AdaptedOutput
from vlpeft.tuners.hyperformer.hypernet import HyperAdapter, StackHyperNet, TaskEmbeddings
from vlpeft.tuners.method_kinds import InjectedMethod
from vlpeft.tuners.targets import hyper_positions

WEIGHTS_FILE = "vlpeft_hyperformer.safetensors"
HOLDER = "vlpeft_hyper"


def _targets(model: nn.Module, family: str) -> list[tuple[str, str, int, str]]:
    """``(module name, stack, layer, position type)`` of every adapter position of ``model``."""
    found = []
    for pattern, position in hyper_positions(family):
        regex = re.compile(pattern)
        for name, module in model.named_modules():
            match = regex.search(name)
            if match and not isinstance(module, AdaptedOutput):
                found.append((name, match["stack"], int(match["layer"]), position))
    if not found:
        raise ConfigError(
            f"Hyperformer positions of family {family!r} match no module of {type(model).__name__}"
        )
    return sorted(found)


def inject_hyperformer(model: nn.Module, cfg: PeftConfig, family: str) -> list[str]:
    """Register the hypernetworks on ``model`` and wrap every position; returns the wrapped names."""
    h = cfg.hyperformer
    if not cfg.tasks:
        raise ConfigError(
            "peft.method hyperformer needs peft.tasks (set from multitask.tasks): one embedding per task"
        )
    targets = _targets(model, family)
    ref = next(model.parameters())
    width = model.get_input_embeddings().weight.shape[1]
    holder = nn.Module()
    holder.task_embeddings = TaskEmbeddings(list(cfg.tasks), h.task_embedding_dim)
    holder.stacks = nn.ModuleDict()
    for stack in sorted({t[1] for t in targets}):
        layers = [t for t in targets if t[1] == stack]
        positions = tuple(
            p for p in ("self_attention", "cross_attention", "feed_forward") if p in {t[3] for t in layers}
        )
        holder.stacks[stack] = StackHyperNet(
            max(t[2] for t in layers) + 1,
            positions,
            width,
            cfg.rank,
            h.task_embedding_dim,
            h.task_hidden_dim,
            h.projected_dim,
            h.init_std,
        )
    holder.to(device=ref.device, dtype=ref.dtype)
    model.add_module(HOLDER, holder)
    for name, stack, layer, position in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        adapter = HyperAdapter(
            holder.stacks[stack], holder.task_embeddings, layer, position, cfg.routing, h.activation
        )
        setattr(parent, child, AdaptedOutput(getattr(parent, child), adapter))
    return [t[0] for t in targets]


METHOD = InjectedMethod(
    WEIGHTS_FILE,
    inject_hyperformer,
    required=f"{HOLDER}.",
    mismatch="positions saved, the base model has a different number",
)
