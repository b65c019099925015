"""Public PEFT API: apply a method to a Hugging Face model by config, save it, load it back.

Directory written by ``save_peft`` (all writes atomic; weights are safetensors only)::

    vlpeft_peft.json                 {"format": "vlpeft-peft", "version": 1, "method", "family",
                                      "peft": {...}, "adapted": [module names],
                                      "trainable": [parameter names]}
    adapter_config.json              method lora: peft's own files (PeftModel.save_pretrained)
    adapter_model.safetensors        method lora: LoRA weights (peft key names)
    extra_trainable.safetensors      method lora: other trainable parameters (LayerNorms ...), our names
    vlpeft_adapter.safetensors       method adapter: every trainable parameter (adapters, LayerNorms)
    vlpeft_full.safetensors          method full: every parameter

``vlpeft_peft.json`` carries the routing kind; ``load_peft`` refuses a directory without it, so a routed
adapter never comes back as plain LoRA through this API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError, DataError
from vlpeft.io import atomic_path, read_json, write_json
from vlpeft.tuners.adapter import adapted_outputs, inject_adapters
from vlpeft.tuners.context import checkpoint_kwargs
from vlpeft.tuners.lora import RoutedLoraLinear, is_own_layer, lora_layers, routed_lora_config
from vlpeft.tuners.targets import adapter_patterns, fused_lora_layout, lora_targets

STATE_FILE = "vlpeft_peft.json"
FORMAT = "vlpeft-peft"
_STATE_ATTR = "_vlpeft_peft_state"


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` that require gradients, in ``named_parameters`` order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _is_norm(module: nn.Module) -> bool:
    # nn.LayerNorm plus model-specific norms (T5LayerNorm, RMSNorm variants) that do not subclass it.
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or name.endswith(("LayerNorm", "RMSNorm"))


def _unfreeze_norms(model: nn.Module) -> None:
    """Make the LayerNorms inside transformer blocks trainable (names with a layer index, e.g. ``h.3.ln_1``).

    As in the paper (§B.4) the embedding LayerNorm and the final ``ln_f`` stay frozen.
    """
    for name, module in model.named_modules():
        if _is_norm(module) and re.search(r"\.\d+\.", f".{name}."):
            for p in module.parameters(recurse=False):
                p.requires_grad_(True)


def _unfreeze_biases(model: nn.Module, bias: str, wrapped: list[str]) -> None:
    """Adapters' counterpart of peft's ``bias``: ``all`` biases or those of the wrapped layers."""
    for name, p in model.named_parameters():
        if (bias == "all" and name.endswith(".bias")) or (bias == "lora_only" and name in wrapped):
            p.requires_grad_(True)


def _family(model: nn.Module, family: str | None) -> str:
    if family:
        return family
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "model_type", None):
        raise ConfigError(f"cannot tell the model family of {type(model).__name__}; pass family=")
    return str(config.model_type)


def _lora_config(peft_cfg: PeftConfig, family: str) -> LoraConfig:
    """The ``LoraConfig`` equivalent to ``peft_cfg`` (routing registered when it is not ``none``)."""
    config = LoraConfig(
        r=peft_cfg.rank,
        lora_alpha=peft_cfg.alpha,
        lora_dropout=peft_cfg.dropout,
        bias=peft_cfg.bias,
        target_modules=lora_targets(family, peft_cfg.target_modules),
        fan_in_fan_out=family == "gpt2",  # GPT-2's projections are Conv1D (weight stored (in, out))
    )
    return routed_lora_config(config, peft_cfg.routing, *fused_lora_layout(family, peft_cfg.fused_qkv))


def _inject_adapters(model: nn.Module, peft_cfg: PeftConfig, family: str) -> list[str]:
    """The bottleneck adapters ``peft_cfg`` asks for, at the family's positions; returns the wrapped names."""
    a = peft_cfg.adapter
    patterns = adapter_patterns(family, list(a.positions), peft_cfg.target_modules)
    return inject_adapters(
        model,
        patterns,
        peft_cfg.rank,
        peft_cfg.routing,
        a.activation,
        a.skip,
        a.init_std,
        shared_per_block=a.shared_per_block,
    )


def _check_lora_alive(model: nn.Module) -> None:
    """Pitfall P10: a LoRA A that is all zeros never trains (init skipped inside ``from_pretrained``)."""
    for name, layer in lora_layers(model):
        for adapter, lin in layer.lora_A.items():
            if not torch.any(lin.weight != 0):
                raise RuntimeError(
                    f"LoRA A of {name} (adapter {adapter}) is all zeros: its initialisation was skipped; "
                    "apply PEFT after from_pretrained, outside any init-skipping context"
                )


def apply_peft(model: nn.Module, peft_cfg: PeftConfig, family: str | None = None) -> nn.Module:
    """Apply ``peft_cfg.method`` to ``model`` and return the module to use from now on.

    - ``lora``: a peft ``PeftModel`` (routing ``none`` = peft's ``lora.Linear``, bit-identical to
      ``get_peft_model``; other kinds, and the q/v thirds of a fused QKV projection with ``fused_qkv: qv``,
      = ``RoutedLoraLinear``). Targets: ``peft_cfg.target_modules`` or the family default (query and value).
    - ``adapter``: ``model`` itself with bottleneck adapters on the sublayer outputs, everything else frozen.
    - ``full``: every parameter trainable. ``frozen``: none.
    LayerNorms are trainable with ``peft_cfg.train_layernorm`` (lora and adapter). ``family`` is the
    transformers ``model_type`` (default ``model.config.model_type``).
    """
    family = _family(model, family)
    method = peft_cfg.method
    if method in ("full", "frozen") and peft_cfg.routing != "none":
        raise ConfigError(f"peft.routing={peft_cfg.routing} needs method lora or adapter (got {method})")
    adapted: list[str] = []
    if method == "full":
        model.requires_grad_(True)
    elif method == "frozen":
        model.requires_grad_(False)
    elif method == "lora":
        model = get_peft_model(model, _lora_config(peft_cfg, family))
        _check_lora_alive(model)
        adapted = [n for n, _ in lora_layers(model)]
        if peft_cfg.train_layernorm:
            _unfreeze_norms(model)
    elif method == "adapter":
        model.requires_grad_(False)
        adapted = _inject_adapters(model, peft_cfg, family)
        if peft_cfg.train_layernorm:
            _unfreeze_norms(model)
        _unfreeze_biases(model, peft_cfg.bias, [f"{n}.base.bias" for n in adapted])
    else:  # pragma: no cover - PeftConfig validation makes this unreachable
        raise ConfigError(f"peft.method {method!r} is unknown")
    state = {
        "format": FORMAT,
        "version": 1,
        "method": method,
        "family": family,
        "peft": peft_cfg.model_dump(mode="json"),
        "adapted": adapted,
        "trainable": trainable_names(model),
    }
    object.__setattr__(model, _STATE_ATTR, state)
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


def _tensors(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().contiguous().cpu() for n in names}


def save_peft(model: nn.Module, out_dir: str | Path) -> Path:
    """Save what ``apply_peft`` added or trains to ``out_dir`` (replaced atomically); see module docstring."""
    state = dict(peft_state(model))
    # The method's trainable set (recorded by apply/load) plus anything trainable now: freezing a model for
    # evaluation, or loading it frozen, must not drop its trained LayerNorms from a later save.
    recorded = set(state.get("trainable", [])) | set(trainable_names(model))
    trainable = [n for n, _ in model.named_parameters() if n in recorded]
    state["trainable"] = trainable
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        method = state["method"]
        if method == "lora":
            if not isinstance(model, PeftModel):
                raise ValueError("method lora expects the PeftModel returned by apply_peft")
            model.save_pretrained(str(tmp))
            extra = [n for n in trainable if ".lora_A." not in n and ".lora_B." not in n]
            if extra:
                save_file(_tensors(model, extra), str(tmp / "extra_trainable.safetensors"))
        elif method == "adapter":
            save_file(_tensors(model, trainable), str(tmp / "vlpeft_adapter.safetensors"))
        elif method == "full":
            save_file(
                _tensors(model, [n for n, _ in model.named_parameters()]),
                str(tmp / "vlpeft_full.safetensors"),
            )
        write_json(tmp / STATE_FILE, state)
    return out_dir


def _read_state(peft_dir: Path) -> dict[str, Any]:
    state = read_json(peft_dir / STATE_FILE, "vlpeft PEFT settings (not a save_peft directory?)")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{peft_dir / STATE_FILE}: not a vlpeft PEFT settings file")
    return state


def _load_into(model: nn.Module, path: Path, trainable: bool, required: str | None = None) -> None:
    """Copy the tensors of ``path`` into ``model``; every parameter whose name contains ``required`` must be
    in the file (a partial adapter file would otherwise leave random adapters behind silently)."""
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise DataError(f"{path}: parameters {unknown[:3]} do not exist in {type(model).__name__}")
    absent = sorted(n for n in params if required is not None and required in n and n not in tensors)
    if absent:
        raise DataError(f"{path}: parameters {absent[:3]} are missing")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
            params[name].requires_grad_(trainable)


def load_peft(base_model: nn.Module, peft_dir: str | Path, is_trainable: bool = False) -> nn.Module:
    """Rebuild the model ``save_peft`` saved: apply the same method to ``base_model`` and load the weights.

    Routed LoRA layers always come back routed (checked). With ``is_trainable`` the saved trainable set is
    trainable again (to resume training); otherwise everything is frozen.
    """
    peft_dir = Path(peft_dir)
    state = _read_state(peft_dir)
    # Saves from before peft.fused_qkv existed adapted GPT-2's whole c_attn.
    peft_cfg = PeftConfig.model_validate({"fused_qkv": "all", **state["peft"]})
    method, family = state["method"], state["family"]
    trainable = set(state.get("trainable", []))
    if method == "lora":
        slices, fused = fused_lora_layout(family, peft_cfg.fused_qkv)
        config = routed_lora_config(
            LoraConfig.from_pretrained(str(peft_dir)), peft_cfg.routing, slices, fused
        )
        model = PeftModel.from_pretrained(base_model, str(peft_dir), config=config, is_trainable=is_trainable)
        layers = lora_layers(model)
        ours = [n for n, m in layers if isinstance(m, RoutedLoraLinear)]
        expected = [n for n, _ in layers if is_own_layer(n, peft_cfg.routing, slices, fused)]
        if not layers or ours != expected:
            raise DataError(
                f"{peft_dir}: LoRA layers did not load as routing={peft_cfg.routing}, "
                f"fused_qkv={peft_cfg.fused_qkv}"
            )
        extra = peft_dir / "extra_trainable.safetensors"
        if extra.is_file():
            _load_into(model, extra, is_trainable)
    elif method == "adapter":
        model = base_model
        model.requires_grad_(False)
        _inject_adapters(model, peft_cfg, family)
        _load_into(model, peft_dir / "vlpeft_adapter.safetensors", is_trainable, required=".adapter.")
        if len(adapted_outputs(model)) != len(state["adapted"]):
            raise DataError(
                f"{peft_dir}: {len(state['adapted'])} adapters saved, the base model takes a different number"
            )
    elif method == "full":
        model = base_model
        _load_into(model, peft_dir / "vlpeft_full.safetensors", is_trainable, required="")
    else:
        model = base_model
        model.requires_grad_(False)
    if is_trainable:
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable)
    else:
        model.requires_grad_(False)
    object.__setattr__(model, _STATE_ATTR, state)
    return model
