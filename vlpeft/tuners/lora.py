"""Routed LoRA: a peft ``lora.Linear`` whose bottleneck goes through a routing function.

For a frozen layer ``W`` with text input ``X_t`` and the current visual features ``X_v`` (from
``visual_context``)::

    x_t = A(dropout(X_t))      x_v = A(dropout(X_v))      (same A, independent dropout masks)
    y   = W X_t + s · B(route(kind, x_t, x_v)),   s = alpha / r

The layer is installed with ``LoraConfig._register_custom_module`` for ``nn.Linear`` and GPT-2's ``Conv1D``
(``fan_in_fan_out``), so everything else (parameter names, saving, ``disable_adapter``) is peft's own.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as LoraLinear
from transformers.pytorch_utils import Conv1D

from vlpeft.errors import ConfigError
from vlpeft.routing import check_kind, route
from vlpeft.tuners.context import current_visual, expand_to_batch


class RoutedMergeError(RuntimeError):
    """Merging a routed LoRA layer into its base weight is impossible: the update depends on the image."""


class RoutedLoraLinear(LoraLinear):
    """peft LoRA ``Linear`` with a routing function between ``A`` and ``B`` (see module docstring).

    Installed by peft through the factory that ``routed_lora_config`` registers (``routing`` bound).
    """

    def __init__(self, base_layer: nn.Module, adapter_name: str, *, routing: str, **kwargs: Any) -> None:
        check_kind(routing)
        if routing == "none":
            raise ConfigError(
                "routing 'none' is peft's own lora.Linear; RoutedLoraLinear needs a routed kind"
            )
        base = base_layer.get_base_layer() if hasattr(base_layer, "get_base_layer") else base_layer
        is_conv1d = isinstance(base, Conv1D)
        # peft's default dispatcher does this for Conv1D; our custom dispatch must too (weight is (in, out)).
        kwargs.setdefault("is_target_conv_1d_layer", is_conv1d)
        super().__init__(base_layer, adapter_name, **kwargs)
        self.fan_in_fan_out = is_conv1d
        self.routing = routing

    # ------------------------------------------------------------------------------------------ forward
    def _visual(self, x: torch.Tensor) -> torch.Tensor:
        x_v = current_visual()
        if x_v is None:
            raise RuntimeError(
                f"routed LoRA layer ({self.routing}) called without visual features: wrap the forward in "
                "vlpeft.tuners.visual_context(x_v); with gradient checkpointing use "
                "gradient_checkpointing_kwargs=vlpeft.tuners.checkpoint_kwargs() or call backward() inside it"
            )
        if x_v.shape[-1] != self.in_features:
            raise ValueError(
                f"visual features have width {x_v.shape[-1]}, this routed layer expects {self.in_features}; "
                "use a projection (model.projection: linear) or width-matched backbones"
            )
        return expand_to_batch(x_v.to(x.device), x.shape[0])

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Base output plus the routed LoRA update of every active adapter."""
        self._check_forward_args(x, *args, **kwargs)
        if kwargs.get("adapter_names") is not None:
            raise RuntimeError("routed LoRA does not support mixed-adapter batches (adapter_names)")
        kwargs.pop("adapter_names", None)
        if self.disable_adapters or self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        result_dtype = result.dtype
        active = [a for a in self.active_adapters if a in self.lora_A]
        if not active:
            return result
        x_v_raw = self._visual(x)
        for name in active:
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            dropout = self.lora_dropout[name]
            xa = self._cast_input_dtype(x, lora_a.weight.dtype)
            x_t = lora_a(dropout(xa))
            x_v = lora_a(dropout(x_v_raw.to(lora_a.weight.dtype)))
            # route works on (B, n, r); hidden states may carry any number of middle dims.
            lead = x_t.shape[:-1]
            z = route(self.routing, x_t.reshape(x_t.shape[0], -1, x_t.shape[-1]), x_v)
            result = result + lora_b(z.reshape(*lead, z.shape[-1])) * self.scaling[name]
        return result.to(result_dtype)

    # -------------------------------------------------------------------------------------------- merge
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Refused: a routed update depends on each batch's visual features, so no weight equals it."""
        raise RoutedMergeError(
            f"cannot merge a routed LoRA layer (routing={self.routing!r}): its update depends on the image; "
            "keep the adapter unmerged (only routing 'none' merges)"
        )

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """Refused for the same reason as ``merge``."""
        raise RoutedMergeError(f"routed LoRA (routing={self.routing!r}) has no data-independent delta weight")

    def __repr__(self) -> str:
        return f"routed[{self.routing}]" + super().__repr__()


def routed_lora_config(config: LoraConfig, routing: str) -> LoraConfig:
    """Register ``RoutedLoraLinear`` for ``routing`` on ``config`` (in place) and return it.

    ``_custom_modules`` is not serialised by peft, so this must be called again before every load.
    """
    check_kind(routing)
    if routing != "none":
        factory = functools.partial(RoutedLoraLinear, routing=routing)
        config._register_custom_module({nn.Linear: factory, Conv1D: factory})
    return config


def lora_layers(model: nn.Module) -> list[tuple[str, LoraLinear]]:
    """All peft LoRA ``Linear`` layers of ``model`` (routed or not) with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear)]
