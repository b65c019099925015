"""Routed LoRA: a peft ``lora.Linear`` whose bottleneck goes through a routing function.

For a frozen layer ``W`` with text input ``X_t`` and the current visual features ``X_v`` (from
``visual_context``)::

    x_t = A(dropout(X_t))      x_v = A(dropout(X_v))      (same A, independent dropout masks)
    y   = W X_t + s · B(route(kind, x_t, x_v)),   s = alpha / r

**Fused QKV projections** (GPT-2's ``c_attn``, output ``[q | k | v]``) can be adapted on some thirds only, as
the released code does (``enable_lora=[True, False, True]``, paper-notes §A.4): with ``k`` adapted thirds of
width ``d``, ``A`` is ``(k·r × d_in)`` (the thirds' ``A_i`` stacked) and routing acts on the **joint**
``k·r`` bottleneck, so ``vl``/``mul_expand`` couple query and value; ``B`` is ``(k·d × r)``, block ``B_i``
mapping slice ``i`` of ``z`` to third ``i`` (the released grouped conv1d), zero for the other thirds::

    z = route(kind, A X_t, A X_v)  (k·r)      y = W X_t + s · pad([B_1 z_1, ..., B_k z_k])

With routing ``none`` that is ``k`` independent rank-``r`` LoRAs, one per adapted third (mergeable).

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
from vlpeft.tuners.context import current_visual, expand_to_batch, require_task

QKV = ("q", "k", "v")


class RoutedMergeError(RuntimeError):
    """Merging a routed LoRA layer into its base weight is impossible: the update depends on the image."""


class RoutedLoraLinear(LoraLinear):
    """peft LoRA ``Linear`` with a routing function between ``A`` and ``B``, optionally on some thirds of a
    fused QKV projection (``qkv_slices``, e.g. ``("q", "v")``); see the module docstring.

    Installed by peft through the factory that ``routed_lora_config`` registers (settings bound).
    """

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        *,
        routing: str,
        qkv_slices: tuple[str, ...] | None = None,
        per_task: bool = False,
        **kwargs: Any,
    ) -> None:
        check_kind(routing)
        if routing == "none" and not qkv_slices and not per_task:
            raise ConfigError(
                "routing 'none' is peft's own lora.Linear; RoutedLoraLinear needs a routed kind, qkv_slices "
                "or per_task"
            )
        # per_task: one peft adapter per task, named by the task; the task context selects it in forward.
        object.__setattr__(self, "per_task", per_task)
        base = base_layer.get_base_layer() if hasattr(base_layer, "get_base_layer") else base_layer
        is_conv1d = isinstance(base, Conv1D)
        # update_layer (called by peft's __init__) reads the slices: set them before it runs.
        object.__setattr__(self, "qkv_slices", _check_slices(qkv_slices, base, kwargs.get("target_name")))
        # peft's default dispatcher does this for Conv1D; our custom dispatch must too (weight is (in, out)).
        kwargs.setdefault("is_target_conv_1d_layer", is_conv1d)
        super().__init__(base_layer, adapter_name, **kwargs)
        self.fan_in_fan_out = is_conv1d
        self.routing = routing

    def update_layer(
        self, adapter_name: str, r: int, lora_alpha: int, config: LoraConfig, **kwargs: Any
    ) -> None:
        """peft's ``update_layer``; with ``qkv_slices``, ``A`` becomes (k·r × in) and ``B`` (k·d × r)."""
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        if not self.qkv_slices:
            return
        k, third = len(self.qkv_slices), self.out_features // 3
        self.lora_A[adapter_name] = nn.Linear(self.in_features, k * r, bias=False)
        self.lora_B[adapter_name] = nn.Linear(r, k * third, bias=False)
        # the same initialisation peft gives its own layers (kaiming-uniform A, zero B), on the base's device
        self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _sliced_update(self, z: torch.Tensor, lora_b: nn.Linear) -> torch.Tensor:
        """``pad([B_1 z_1, ..., B_k z_k])``: z (..., k·r) -> (..., 3·d), zeros on the thirds not adapted."""
        k, third = len(self.qkv_slices), self.out_features // 3
        blocks = lora_b.weight.view(k, third, -1)  # B_i: (d, r)
        up = torch.einsum("...kr,kdr->...kd", z.unflatten(-1, (k, -1)), blocks)
        full = up.new_zeros(*up.shape[:-2], 3, third)
        full[..., [QKV.index(s) for s in self.qkv_slices], :] = up
        return full.flatten(-2)

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
        """Base output plus the (routed, sliced) LoRA update of every active adapter."""
        self._check_forward_args(x, *args, **kwargs)
        if kwargs.get("adapter_names") is not None:
            raise RuntimeError("routed LoRA does not support mixed-adapter batches (adapter_names)")
        kwargs.pop("adapter_names", None)
        if self.disable_adapters or self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        result_dtype = result.dtype
        if self.per_task:
            task = require_task("per-task LoRA layer")
            if task not in self.lora_A:
                raise KeyError(f"LoRA has no adapter for task {task!r} (adapters: {', '.join(self.lora_A)})")
            active = [task]
        else:
            active = [a for a in self.active_adapters if a in self.lora_A]
        if not active:
            return result
        x_v_raw = self._visual(x) if self.routing != "none" else None
        for name in active:
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            dropout = self.lora_dropout[name]
            x_t = lora_a(dropout(self._cast_input_dtype(x, lora_a.weight.dtype)))
            z = x_t
            if x_v_raw is not None:
                x_v = lora_a(dropout(x_v_raw.to(lora_a.weight.dtype)))
                # route works on (B, n, r); hidden states may carry any number of middle dims.
                flat = route(self.routing, x_t.reshape(x_t.shape[0], -1, x_t.shape[-1]), x_v)
                z = flat.reshape(x_t.shape)
            update = self._sliced_update(z, lora_b) if self.qkv_slices else lora_b(z)
            result = result + update * self.scaling[name]
        return result.to(result_dtype)

    # -------------------------------------------------------------------------------------------- merge
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Refused when routed: the update depends on each batch's visual features, so no weight equals it.

        A sliced layer with routing ``none`` merges as peft does (through ``get_delta_weight``).
        """
        if self.routing != "none":
            raise RoutedMergeError(
                f"cannot merge a routed LoRA layer (routing={self.routing!r}): its update depends on the "
                "image; keep the adapter unmerged (only routing 'none' merges)"
            )
        super().merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """``s · pad([B_i A_i])`` in the base weight's layout (routing ``none`` only)."""
        if self.routing != "none":
            raise RoutedMergeError(
                f"routed LoRA (routing={self.routing!r}) has no data-independent delta weight"
            )
        lora_a, lora_b = self.lora_A[adapter], self.lora_B[adapter]
        k, r = len(self.qkv_slices), self.r[adapter]
        a_blocks = lora_a.weight.view(k, r, self.in_features)  # A_i: (r, in)
        b_blocks = lora_b.weight.view(k, self.out_features // 3, r)  # B_i: (d, r)
        delta = torch.zeros(3, self.out_features // 3, self.in_features, dtype=a_blocks.dtype)
        delta = delta.to(a_blocks.device)
        delta[[QKV.index(s) for s in self.qkv_slices]] = b_blocks @ a_blocks
        weight = delta.flatten(0, 1)  # (out, in)
        if self.fan_in_fan_out:
            weight = weight.T
        return weight * self.scaling[adapter]

    def __repr__(self) -> str:
        sliced = f"[{','.join(self.qkv_slices)}]" if self.qkv_slices else ""
        return f"routed[{self.routing}]{sliced}" + super().__repr__()


def _check_slices(
    slices: tuple[str, ...] | None, base: nn.Module, name: str | None
) -> tuple[str, ...] | None:
    """The adapted thirds in q, k, v order, or ``None`` for the whole projection; checks the layer."""
    if not slices:
        return None
    unknown = [s for s in slices if s not in QKV]
    if unknown or len(set(slices)) != len(slices):
        raise ConfigError(f"qkv slices {list(slices)} must be distinct names from {list(QKV)}")
    out_features = base.nf if isinstance(base, Conv1D) else base.out_features
    if out_features % 3:
        raise ConfigError(
            f"{name or type(base).__name__}: output width {out_features} is not a fused q|k|v projection"
        )
    return tuple(s for s in QKV if s in slices)


def routed_lora_config(
    config: LoraConfig,
    routing: str,
    qkv_slices: tuple[str, ...] | None = None,
    fused_names: tuple[str, ...] = (),
    per_task: bool = False,
) -> LoraConfig:
    """Register ``RoutedLoraLinear`` on ``config`` (in place) and return it.

    Every target becomes routed when ``routing`` is not ``none``, and ours when ``per_task`` (one peft adapter
    per task, selected by the task context); targets whose name ends in one of ``fused_names`` (fused QKV
    projections) are adapted on ``qkv_slices`` only. Everything else stays peft's own ``lora.Linear``.
    ``_custom_modules`` is not serialised by peft: call this again before every load.
    """
    check_kind(routing)
    sliced = bool(qkv_slices and fused_names)
    if routing != "none" or sliced or per_task:
        factory = functools.partial(
            _dispatch,
            routing=routing,
            qkv_slices=qkv_slices if sliced else None,
            fused_names=fused_names,
            per_task=per_task,
        )
        config._register_custom_module({nn.Linear: factory, Conv1D: factory})
    return config


def _dispatch(
    target: nn.Module,
    adapter_name: str,
    *,
    routing: str,
    qkv_slices: tuple[str, ...] | None,
    fused_names: tuple[str, ...],
    per_task: bool = False,
    **kwargs: Any,
) -> RoutedLoraLinear | None:
    """peft custom-module hook: our layer where it differs from peft's, ``None`` (peft's own) elsewhere."""
    name = kwargs.get("target_name") or ""
    if not is_own_layer(name, routing, qkv_slices, fused_names, per_task):
        return None
    slices = layer_slices(name, qkv_slices, fused_names)
    return RoutedLoraLinear(
        target, adapter_name, routing=routing, qkv_slices=slices, per_task=per_task, **kwargs
    )


def layer_slices(
    module_name: str, qkv_slices: tuple[str, ...] | None, fused_names: tuple[str, ...]
) -> tuple[str, ...] | None:
    """The thirds the LoRA layer ``module_name`` adapts: ``qkv_slices`` when it is one of the fused QKV
    projections named by ``fused_names`` (suffixes), else ``None`` (the whole output)."""
    fused = any(module_name == f or module_name.endswith("." + f) for f in fused_names)
    return qkv_slices if fused and qkv_slices else None


def is_own_layer(
    module_name: str,
    routing: str,
    qkv_slices: tuple[str, ...] | None,
    fused_names: tuple[str, ...],
    per_task: bool = False,
) -> bool:
    """Whether the LoRA layer ``module_name`` is a ``RoutedLoraLinear`` (routed, sliced or per task), not
    peft's own."""
    return per_task or routing != "none" or layer_slices(module_name, qkv_slices, fused_names) is not None


def lora_layers(model: nn.Module) -> list[tuple[str, LoraLinear]]:
    """All peft LoRA ``Linear`` layers of ``model`` (routed or not) with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear)]
