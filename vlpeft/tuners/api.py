"""Public PEFT API: apply a registered method to a Hugging Face model by config, save it, load it back.

Everything method-specific lives in the method's package (``vlpeft.tuners.<method>``, see
``vlpeft.tuners.registry``); this module holds what all methods share: the routing check, the LayerNorm
policy, the trainable set and the settings file. Directory written by ``save_peft`` (atomic; weights are
safetensors only)::

    vlpeft_peft.json     {"format": "vlpeft-peft", "version": 1, "method", "family", "peft": {...},
                          "adapted": [module names], "trainable": [parameter names]}
    README.md            model card: what this is and how to load it (``vlpeft.tuners.card``)
    <the method's files> e.g. lora: adapter_config.json, adapter_model.safetensors (peft's own; plain peft
                         loads routing-none adapters exactly and refuses the others, naming vlpeft:
                         ``vlpeft.tuners.lora.portable``), extra_trainable.safetensors when vlpeft-only;
                         adapter: vlpeft_adapter.safetensors; full: vlpeft_full.safetensors
                         (``MethodSpec.state_files``)

``vlpeft_peft.json`` carries the method and the routing kind; ``load_peft`` refuses a directory without it, so
a routed adapter never comes back as plain LoRA through this API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from peft import PeftModel

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError, DataError
from vlpeft.io import atomic_dir, read_json, write_json
from vlpeft.tuners.card import write_card
from vlpeft.tuners.context import checkpoint_kwargs
from vlpeft.tuners.registry import MethodSpec, get_method
from vlpeft.tuners.trainable import trainable_names, unfreeze_norms

STATE_FILE = "vlpeft_peft.json"
FORMAT = "vlpeft-peft"
_STATE_ATTR = "_vlpeft_peft_state"

__all__ = ["apply_peft", "enable_gradient_checkpointing", "load_peft", "peft_state", "save_peft"]


def _family(model: nn.Module, family: str | None) -> str:
    if family:
        return family
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "model_type", None):
        raise ConfigError(f"cannot tell the model family of {type(model).__name__}; pass family=")
    return str(config.model_type)


def method_spec(peft_cfg: PeftConfig, family: str) -> MethodSpec:
    """The registered spec of ``peft_cfg.method``, checked against the routing kind and the family."""
    spec = get_method(peft_cfg.method)
    problem = spec.setting_problem(peft_cfg.routing, peft_cfg.sharing)  # also refused when params load
    if problem:
        raise ConfigError(problem)
    if not spec.supports(family):
        raise ConfigError(
            f"peft.method {spec.name} does not support model family {family!r} "
            f"(supported: {', '.join(spec.families or ())})"
        )
    return spec


def _record(model: nn.Module, state: dict[str, Any]) -> None:
    # object.__setattr__: a plain attribute, never a registered submodule or buffer.
    object.__setattr__(model, _STATE_ATTR, state)


def apply_peft(model: nn.Module, peft_cfg: PeftConfig, family: str | None = None) -> nn.Module:
    """Apply ``peft_cfg.method`` to ``model`` and return the module to use from now on.

    The method decides what it injects and trains (e.g. ``lora`` returns peft's ``PeftModel``; ``adapter``
    the model itself with adapters; ``full`` trains everything, ``frozen`` nothing). Then, for methods with
    ``common_trainables``, the LayerNorms of ``peft.layernorm_scope`` train with ``peft.train_layernorm``.
    ``family`` is the transformers ``model_type`` (default ``model.config.model_type``).
    """
    family = _family(model, family)
    spec = method_spec(peft_cfg, family)
    model, adapted = spec.impl().apply(model, peft_cfg, family)
    if spec.common_trainables and peft_cfg.train_layernorm:
        unfreeze_norms(model, peft_cfg.layernorm_scope)
    _record(
        model,
        {
            "format": FORMAT,
            "version": 1,
            "method": spec.name,
            "family": family,
            "peft": peft_cfg.model_dump(mode="json"),
            "adapted": adapted,
            "trainable": trainable_names(model),
        },
    )
    return model


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turn on activation checkpointing of the Hugging Face model inside ``model`` (a PeftModel or not).

    Uses ``checkpoint_kwargs()`` so routed layers recompute with the forward's visual context.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs())
    else:  # transformers releases before the rename
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs())


def peft_state(model: nn.Module) -> dict[str, Any]:
    """The settings ``apply_peft``/``load_peft`` recorded on ``model`` (raises if there are none)."""
    state = getattr(model, _STATE_ATTR, None)
    if state is None:
        raise ValueError(f"{type(model).__name__} was not prepared by vlpeft.tuners.apply_peft/load_peft")
    return state


def save_peft(model: nn.Module, out_dir: str | Path) -> Path:
    """Save what ``apply_peft`` added or trains to ``out_dir`` (replaced atomically); see module docstring."""
    state = dict(peft_state(model))
    # The method's trainable set (recorded by apply/load) plus anything trainable now: freezing a model for
    # evaluation, or loading it frozen, must not drop its trained LayerNorms from a later save.
    recorded = set(state.get("trainable", [])) | set(trainable_names(model))
    trainable = [n for n, _ in model.named_parameters() if n in recorded]
    state["trainable"] = trainable
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        get_method(state["method"]).impl().save(model, tmp, trainable)
        write_json(tmp / STATE_FILE, state)
        write_card(tmp, state)
    return out_dir


def _read_state(peft_dir: Path) -> dict[str, Any]:
    state = read_json(peft_dir / STATE_FILE, "vlpeft PEFT settings (not a save_peft directory?)")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{peft_dir / STATE_FILE}: not a vlpeft PEFT settings file")
    return state


def saved_peft_config(state: dict[str, Any]) -> PeftConfig:
    """The ``PeftConfig`` of a settings file, including saves from earlier versions.

    Saves from before ``peft.fused_qkv`` existed adapted GPT-2's whole ``c_attn`` (``all``).
    """
    return PeftConfig.model_validate({"fused_qkv": "all", **state["peft"]})


def load_peft(base_model: nn.Module, peft_dir: str | Path, is_trainable: bool = False) -> nn.Module:
    """Rebuild the model ``save_peft`` saved: apply the same method to ``base_model`` and load the weights.

    Routed LoRA layers always come back routed (checked). With ``is_trainable`` the saved trainable set is
    trainable again (to resume training); otherwise everything is frozen.
    """
    peft_dir = Path(peft_dir)
    state = _read_state(peft_dir)
    peft_cfg = saved_peft_config(state)
    try:
        spec = get_method(state["method"])
    except KeyError as exc:
        raise DataError(f"{peft_dir / STATE_FILE}: {exc.args[0]}") from None
    model = spec.impl().load(base_model, peft_dir, peft_cfg, state, is_trainable)
    trainable = set(state.get("trainable", []))
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable and name in trainable)
    _record(model, state)
    return model
