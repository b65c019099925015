"""PEFT methods for vision-language fine-tuning: routed LoRA, bottleneck adapters, the visual context.

Every method is one package registered by name (``vlpeft.tuners.registry``); ``apply_peft`` / ``save_peft``
/ ``load_peft`` are generic. Importing this package registers the built-in methods (light: their
declarations import no torch, so ``vlpeft.config`` can build the ``peft`` section from them); the
implementations and the names below are imported on first use.

Design
------
- **Routed LoRA is a peft LoRA layer.** ``RoutedLoraLinear`` subclasses peft's ``lora.Linear`` and is
  installed with ``LoraConfig._register_custom_module`` for ``nn.Linear`` and GPT-2's ``Conv1D``
  (``fan_in_fan_out``), so parameter names, ``adapter_config.json``/``adapter_model.safetensors``,
  ``disable_adapter`` and the trainable set are peft's own. Routing ``none`` does not register anything: it
  *is* peft's ``lora.Linear`` and its outputs are bit-identical to ``get_peft_model`` with the same config
  and seed. peft does not serialise the custom-module registry, so ``load_peft`` re-registers it from our
  ``vlpeft_peft.json`` and checks that every layer came back routed. Bare peft loads a routing-``none``
  adapter exactly (trained LayerNorms as ``modules_to_save``) and refuses a routed or sliced one with a
  message naming ``load_peft`` (``vlpeft.tuners.lora.portable``), never loading it as plain LoRA.
- **Visual features reach the layers through a ContextVar** (``visual_context(x_v)``): Hugging Face models
  do not pass extra tensors down to their linear layers. A routed layer called without a context raises
  (silently degrading to plain LoRA would hide bugs). Beam search repeats each sample ``k`` times; the
  layers follow with ``repeat_interleave``. Gradient checkpointing recomputes layers in backward, possibly
  outside the context or on another thread: enable it with
  ``gradient_checkpointing_kwargs=checkpoint_kwargs()``, which restores the forward-time context for the
  recomputation. A ContextVar does not cross into threads, so ``nn.DataParallel`` is not supported (DDP is).
- **Merging a routed layer is refused** (``RoutedMergeError``): its update ``s·B(route(A X_t, A X_v))``
  depends on each image, so no fixed weight equals it. Routing ``none`` merges as usual.
- **Transpose vs the released code.** ``vl``/``vl_relu`` use a true transpose, ``x_t (x_v^T x_v)``, with the
  r×r Gram matrix computed first. The released code uses ``reshape`` there: identical for one pooled visual
  vector (all released results), a scrambled matrix for token features (m > 1). See ``vlpeft.routing``.
- **Adapters are our own** (no adapter library supports transformers 5): ``down → [route] → act → up (+h)``
  wrapping each sublayer's output projection (after attention and after the feed-forward block, before
  dropout, residual and LayerNorm). Every position gets its own adapter, as in VL-Adapter; with
  ``peft.adapter.shared_per_block`` the positions of a block share one, as in the released GPT-2 code.
- **GPT-2's ``c_attn`` is one fused QKV projection.** As in the released code, LoRA adapts only its query and
  value thirds with one joint 2r bottleneck (``peft.fused_qkv: qv``, the default): ``RoutedLoraLinear`` with
  ``qkv_slices``, also for routing ``none`` (then two independent rank-r LoRAs, mergeable).
  ``fused_qkv: all`` is peft's own LoRA on the whole projection.
"""

import importlib
from typing import Any

from vlpeft.tuners.registry import get_method, list_methods, register_method

# The built-in method packages, in the order they are listed; importing one registers it.
BUILTIN_METHODS: tuple[str, ...] = (
    "lora",
    "adapter",
    "full",
    "frozen",
    "compacter",
    "prompt",
    "hyperformer",
    "bitfit",
    "layernorm",
)
for _package in BUILTIN_METHODS:
    importlib.import_module(f"vlpeft.tuners.{_package}")

_LAZY = {
    "AdaptedOutput": "vlpeft.tuners.adapter.layer",
    "BottleneckAdapter": "vlpeft.tuners.adapter.layer",
    "RoutedLoraLinear": "vlpeft.tuners.lora.layer",
    "RoutedMergeError": "vlpeft.tuners.lora.layer",
    "apply_peft": "vlpeft.tuners.api",
    "enable_gradient_checkpointing": "vlpeft.tuners.api",
    "load_peft": "vlpeft.tuners.api",
    "peft_state": "vlpeft.tuners.api",
    "save_peft": "vlpeft.tuners.api",
    "trainable_names": "vlpeft.tuners.trainable",
    "checkpoint_kwargs": "vlpeft.tuners.context",
    "current_task": "vlpeft.tuners.context",
    "current_visual": "vlpeft.tuners.context",
    "require_task": "vlpeft.tuners.context",
    "task_context": "vlpeft.tuners.context",
    "visual_context": "vlpeft.tuners.context",
}


def __getattr__(name: str) -> Any:
    # PEP 562: torch-heavy names load when first used, so importing the registry stays light.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlpeft.tuners' has no attribute {name!r}")


__all__ = [*sorted(_LAZY), "BUILTIN_METHODS", "get_method", "list_methods", "register_method"]
