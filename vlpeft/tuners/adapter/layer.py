"""Bottleneck adapter with an optional routing function (Houlsby/Pfeiffer style, as in VL-Adapter).

``h → down → [route(kind, ·, down(X_v))] → act → up (+ h if skip)``, placed on the output of a sublayer's
output projection, i.e. after attention and after the feed-forward block, before dropout, residual and
LayerNorm (paper-notes §A.5, §F.3). The visual features go through the same ``down`` (bias included, as in
the released code). No adapter library supports transformers 5, so this is our own module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from transformers.activations import ACT2FN
from transformers.pytorch_utils import Conv1D

from vlpeft.errors import ConfigError
from vlpeft.routing import check_kind, route
from vlpeft.tuners.context import current_visual, expand_to_batch, require_task

# Sharing across tasks: (one down per task, one up per task). Shared = one module object for every task.
SHARING: dict[str, tuple[bool, bool]] = {
    "single": (False, False),
    "per_task": (True, True),
    "shared_up": (True, False),  # VL-Adapter's half-shared adapters (Table 1, 8.36 %)
    "shared_down": (False, True),
}


class Bottleneck(nn.Module):
    """``down (d→r) → route → act → up (r→d)``, plus the input when ``skip``, for any ``down``/``up`` modules
    with ``in_features`` (plain Linear, PHM, ...): the skeleton every adapter-family method shares.

    ``down`` / ``up`` may be an ``nn.ModuleDict`` by task name (sharing across tasks): the batch's task
    (``vlpeft.tuners.task_context``) selects the module, and is required then. Routing uses the selected
    ``down`` for the visual features too.
    """

    def __init__(
        self,
        down: nn.Module,
        up: nn.Module,
        routing: str = "none",
        activation: str = "gelu",
        skip: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ACT2FN:
            raise ConfigError(
                f"peft.adapter.activation {activation!r} is unknown (valid: {', '.join(ACT2FN)})"
            )
        self.routing = check_kind(routing)
        self.skip = skip
        self.down = down
        self.up = up
        self.act = ACT2FN[activation]
        self.activation = activation

    def projections(self) -> tuple[nn.Module, nn.Module]:
        """The ``(down, up)`` of the current task (the modules themselves when not per task)."""
        down, up = self.down, self.up
        if isinstance(down, nn.ModuleDict) or isinstance(up, nn.ModuleDict):
            task = require_task("per-task adapter")
            picked = []
            for part in (down, up):
                if isinstance(part, nn.ModuleDict):
                    if task not in part:
                        raise KeyError(f"adapter has no module for task {task!r} (tasks: {', '.join(part)})")
                    part = part[task]
                picked.append(part)
            down, up = picked
        return down, up

    def visual_down(self, h: torch.Tensor, down: nn.Module | None = None) -> torch.Tensor:
        """``down(X_v)`` of the current visual context, expanded to the batch of ``h``."""
        down = self.down if down is None else down
        x_v = current_visual()
        if x_v is None:
            raise RuntimeError(
                f"routed adapter ({self.routing}) called without visual features: wrap the forward in "
                "vlpeft.tuners.visual_context(x_v)"
            )
        if x_v.shape[-1] != down.in_features:
            raise ValueError(
                f"visual features have width {x_v.shape[-1]} but the adapter expects "
                f"{down.in_features}; use a projection or width-matched backbones"
            )
        dtype = next(down.parameters()).dtype
        return down(expand_to_batch(x_v, h.shape[0]).to(h.device, dtype))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Adapter output for hidden states ``h`` (B, ..., d)."""
        down, up = self.projections()
        x = down(h.to(next(down.parameters()).dtype))
        if self.routing != "none":
            v = self.visual_down(h, down)
            lead = x.shape[:-1]
            x = route(self.routing, x.reshape(x.shape[0], -1, x.shape[-1]), v).reshape(*lead, x.shape[-1])
        out = up(self.act(x)).to(h.dtype)
        return h + out if self.skip else out


class BottleneckAdapter(Bottleneck):
    """The bottleneck with ``nn.Linear`` down/up projections (with biases).

    Weights N(0, init_std) and zero biases, as the paper's models initialise new linears.
    """

    def __init__(
        self,
        width: int,
        rank: int,
        routing: str = "none",
        activation: str = "gelu",
        skip: bool = True,
        init_std: float = 0.02,
    ) -> None:
        down, up = nn.Linear(width, rank), nn.Linear(rank, width)
        for lin in (down, up):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)
        super().__init__(down, up, routing, activation, skip)


def task_bottleneck(
    make_down: Callable[[], nn.Module],
    make_up: Callable[[], nn.Module],
    sharing: str,
    tasks: list[str],
    routing: str = "none",
    activation: str = "gelu",
    skip: bool = True,
) -> Bottleneck:
    """A ``Bottleneck`` whose halves are shared or per task as ``sharing`` says (``SHARING``)."""
    if sharing not in SHARING:
        raise ConfigError(f"peft.sharing {sharing!r} is unknown (valid: {', '.join(SHARING)})")
    per_down, per_up = SHARING[sharing]
    if (per_down or per_up) and not tasks:
        raise ConfigError(f"peft.sharing {sharing} needs peft.tasks (set from multitask.tasks)")

    def part(make: Callable[[], nn.Module], per_task: bool) -> nn.Module:
        return nn.ModuleDict({t: make() for t in tasks}) if per_task else make()

    return Bottleneck(part(make_down, per_down), part(make_up, per_up), routing, activation, skip)


class AdaptedOutput(nn.Module):
    """Wraps a sublayer output projection: ``forward(x) = adapter(base(x))``. ``base`` keeps its weights."""

    def __init__(self, base: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.adapter(self.base(*args, **kwargs))

    # Some model code reads the wrapped projection's weight (e.g. T5 checks ``wo.weight.dtype``).
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base, "bias", None)


def _out_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, Conv1D):
        return module.nf
    raise ConfigError(
        f"adapter target of type {type(module).__name__} is not a Linear/Conv1D output projection"
    )


def inject_adapters(
    model: nn.Module,
    patterns: list[str],
    rank: int,
    routing: str = "none",
    activation: str = "gelu",
    skip: bool = True,
    init_std: float = 0.02,
    shared_per_block: bool = False,
    factory: Callable[[int], nn.Module] | None = None,
) -> list[str]:
    """Wrap every module whose full name matches one of ``patterns`` with an adapter; return the names.

    ``factory(width)`` builds each adapter (default: ``BottleneckAdapter(width, rank, routing, activation,
    skip, init_std)``), so PHM or other bottlenecks reuse the same placement.

    With ``shared_per_block`` the positions of one transformer block (names up to the first ``.<index>``,
    e.g. ``transformer.h.3``) use one adapter module, as the released GPT-2 code does (paper-notes §A.5).
    Raises ``ConfigError`` when nothing matches (a wrong family or target list would otherwise train nothing).
    """
    regexes = [re.compile(p) for p in patterns]
    names = [
        n
        for n, m in model.named_modules()
        if n and not isinstance(m, AdaptedOutput) and any(r.search(n) for r in regexes)
    ]
    names = [n for n in names if not n.endswith(".base")]
    if not names:
        raise ConfigError(f"adapter targets {patterns} match no module of {type(model).__name__}")
    if factory is None:

        def factory(width: int) -> nn.Module:
            return BottleneckAdapter(width, rank, routing, activation, skip, init_std)

    shared: dict[str, nn.Module] = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        width = _out_width(base)
        block = block_of(name) if shared_per_block else None
        adapter = shared.get(block) if block is not None else None
        if adapter is None:
            ref = base.weight
            adapter = factory(width)
            adapter.to(device=ref.device, dtype=ref.dtype)
            if block is not None:
                shared[block] = adapter
        elif getattr(adapter.down, "in_features", width) != width:
            raise ConfigError(f"{name}: width {width} cannot share the adapter of block {block}")
        setattr(parent, child, AdaptedOutput(base, adapter))
    return names


def block_of(module_name: str) -> str:
    """The transformer block a module belongs to: its name up to the first numeric index."""
    match = re.match(r"^(.*?\.\d+)(\.|$)", module_name)
    if match is None:
        raise ConfigError(
            f"{module_name}: not inside a numbered block, so no adapter can be shared per block"
        )
    return match.group(1)


def adapter_modules(model: nn.Module) -> list[tuple[str, Bottleneck]]:
    """All bottleneck adapters of ``model`` with their names (a shared adapter once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Bottleneck)]


def adapted_outputs(model: nn.Module) -> list[str]:
    """Names of the modules wrapped with an adapter (every position, shared adapters included)."""
    return [n for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, AdaptedOutput)]
