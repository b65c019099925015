"""What plain peft sees in a saved LoRA adapter: loadable as-is, or refused with a message naming vlpeft.

``PeftModel.from_pretrained(base, dir)`` (no vlpeft installed) must never load one of our adapters *wrongly*:

- **Plain-peft adapters** (every LoRA layer is peft's own ``lora.Linear``, one adapter): the trained modules
  that are not LoRA (LayerNorms) go where peft looks for them, i.e. ``modules_to_save`` in
  ``adapter_config.json`` and their tensors in ``adapter_model.safetensors`` under the keys peft writes for a
  ``ModulesToSaveWrapper`` (``base_model.model.<module>.<param>``, read in peft's
  ``utils/save_and_load.py``/``ModulesToSaveWrapper.adapter_state_dict``). Plain peft then gives the same
  outputs as ``load_peft``. vlpeft itself loads those tensors in place (no wrapper: parameter names and the
  trainable set stay the ones training used).
- **vlpeft-only adapters** (routed or sliced layers, one adapter per task, trainables peft cannot express):
  ``task_type`` in ``adapter_config.json`` is a sentence saying so. peft validates ``task_type`` on every
  config load (``PeftConfig.__post_init__``: "Invalid task type: '...'"), so plain peft refuses the directory
  with our sentence instead of building plain LoRA layers that ignore the routing. The other trainables stay
  in ``extra_trainable.safetensors``.

Directories saved before this module existed (no marker, ``extra_trainable.safetensors``) load in vlpeft.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from vlpeft.errors import DataError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's key prefix of the base model's modules (PeftModel.base_model.model)
MARKER = "VLPEFT"  # start of the task_type sentence of a vlpeft-only adapter


def vlpeft_only_task_type(reason: str) -> str:
    """The ``task_type`` that makes plain peft refuse a vlpeft-only adapter, naming vlpeft and the way out."""
    return (
        f"{MARKER}-ONLY ADAPTER ({reason}): plain peft would load it wrongly. Load it with "
        "`from vlpeft.tuners import load_peft; model = load_peft(base_model, adapter_dir)`"
    )


def is_vlpeft_only(config: dict[str, Any]) -> bool:
    """Whether an ``adapter_config.json`` (as a dict) is marked vlpeft-only."""
    return str(config.get("task_type") or "").startswith(MARKER)


def modules_to_save(model: nn.Module, extra: list[str], trained: set[str]) -> tuple[list[str], str | None]:
    """The base-model modules that hold ``extra`` (trainable non-LoRA parameter names of the ``PeftModel``
    ``model`` that peft does not save itself) with all their state in ``trained`` (every trainable name), or
    ``([], reason)`` when peft's ``modules_to_save`` cannot hold them exactly.

    peft matches ``modules_to_save`` entries by name suffix (``key.endswith(target)``, ``_set_trainable``):
    each name must match only its own module, else plain peft would wrap more than was trained.
    """
    names = sorted({n.rsplit(".", 1)[0] for n in extra})
    base_names = [n.removeprefix(PREFIX) for n, _ in model.named_modules() if n.startswith(PREFIX)]
    out = []
    for name in names:
        if not name.startswith(PREFIX):
            return [], f"trainable {name!r} is outside the base model"
        module = model.get_submodule(name)
        keys = {f"{name}.{k}" for k in module.state_dict()}
        if not keys <= trained:  # e.g. a trained bias alone: peft's modules_to_save saves whole modules
            return [], f"only part of {name.removeprefix(PREFIX)!r} is trained"
        target = name.removeprefix(PREFIX)
        if [n for n in base_names if n.endswith(target)] != [target]:
            return [], f"module name {target!r} is ambiguous for peft's suffix matching"
        out.append(target)
    return out, None


def write_modules_to_save(model: nn.Module, out_dir: Path, modules: list[str]) -> None:
    """Add ``modules`` to ``modules_to_save`` of the saved config and their tensors to peft's weights file."""
    config_path = out_dir / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["modules_to_save"] = sorted(set(config.get("modules_to_save") or []) | set(modules))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    weights = load_file(str(out_dir / WEIGHTS_FILE))
    for module in modules:
        for key, value in model.get_submodule(f"{PREFIX}{module}").state_dict().items():
            weights[f"{PREFIX}{module}.{key}"] = value.detach().contiguous().cpu()
    save_file(weights, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})


def mark_vlpeft_only(out_dir: Path, reason: str) -> None:
    """Mark every ``adapter_config.json`` under ``out_dir`` (per task: one per sub-folder) vlpeft-only."""
    for path in sorted(out_dir.rglob(CONFIG_FILE)):
        config = json.loads(path.read_text())
        config["task_type"] = vlpeft_only_task_type(reason)
        path.write_text(json.dumps(config, indent=2, sort_keys=True))


def read_lora_config(adapter_dir: Path) -> tuple[LoraConfig, list[str]]:
    """The ``LoraConfig`` of a saved adapter for vlpeft's own load, and its ``modules_to_save``.

    The vlpeft-only marker is dropped and ``modules_to_save`` taken out of the config (``load_modules``
    restores those tensors in place, so no peft wrapper changes the parameter names).
    """
    path = adapter_dir / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable peft adapter config ({exc})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: not a peft adapter config")
    if is_vlpeft_only(config):
        config["task_type"] = None
    modules = list(config.pop("modules_to_save", None) or [])
    config.pop("runtime_config", None)
    try:
        lora = LoraConfig.from_peft_type(**config)
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a LoRA adapter config ({exc})") from None
    return lora, modules


def load_modules(model: nn.Module, adapter_dir: Path, modules: list[str]) -> None:
    """Copy the ``modules_to_save`` tensors of peft's weights file into ``model``'s modules, in place; every
    parameter and buffer of each module must be in the file."""
    import torch

    path = adapter_dir / WEIGHTS_FILE
    tensors = load_file(str(path))
    with torch.no_grad():
        for module in modules:
            prefix = f"{PREFIX}{module}."
            try:
                target = model.get_submodule(prefix[:-1])
            except AttributeError:
                raise DataError(f"{path}: modules_to_save {module!r} is not a module of the model") from None
            state = target.state_dict(keep_vars=True)
            missing = sorted(k for k in state if prefix + k not in tensors)
            if missing:
                raise DataError(f"{path}: tensors of {module!r} are missing ({missing[:3]})")
            for key, value in state.items():
                value.copy_(tensors[prefix + key])
