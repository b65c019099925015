"""The trainable-set policy all methods share: names, LayerNorm scopes, biases, trainable tensors on disk.

LayerNorm scope (``peft.layernorm_scope``): ``blocks`` = the norms inside transformer blocks (names with a
layer index, e.g. ``h.3.ln_1``; the routing paper, §B.4: embedding LayerNorm and final ``ln_f`` stay
frozen); ``all`` = every norm of the model, embedding LayerNorms included (VL-Adapter's
``--unfreeze_layer_norms``, which ``requires_grad``s every ``nn.LayerNorm``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vlpeft.errors import DataError

LAYERNORM_SCOPES: tuple[str, ...] = ("blocks", "all")


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` that require gradients, in ``named_parameters`` order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def is_norm(module: nn.Module) -> bool:
    """``nn.LayerNorm`` plus model-specific norms (T5LayerNorm, RMSNorm variants) that do not subclass it."""
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or name.endswith(("LayerNorm", "RMSNorm"))


def norm_modules(model: nn.Module, scope: str = "blocks") -> list[tuple[str, nn.Module]]:
    """The norms of ``model`` in ``scope`` (see the module docstring) with their names."""
    if scope not in LAYERNORM_SCOPES:
        raise ValueError(f"LayerNorm scope {scope!r} is unknown (valid: {', '.join(LAYERNORM_SCOPES)})")
    return [
        (name, module)
        for name, module in model.named_modules()
        if is_norm(module) and (scope == "all" or re.search(r"\.\d+\.", f".{name}."))
    ]


def unfreeze_norms(model: nn.Module, scope: str = "blocks") -> None:
    """Make the LayerNorms of ``scope`` trainable."""
    for _, module in norm_modules(model, scope):
        for p in module.parameters(recurse=False):
            p.requires_grad_(True)


def unfreeze_biases(model: nn.Module, bias: str, wrapped: list[str]) -> None:
    """Our methods' counterpart of peft's ``bias``: ``all`` biases, or ``lora_only`` = the biases named in
    ``wrapped`` (those of the layers the method wraps)."""
    for name, p in model.named_parameters():
        if (bias == "all" and name.endswith(".bias")) or (bias == "lora_only" and name in wrapped):
            p.requires_grad_(True)


def tensors_of(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """CPU copies of the named parameters of ``model`` (safetensors needs contiguous tensors)."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().contiguous().cpu() for n in names}


def save_tensors(model: nn.Module, names: list[str], path: Path) -> None:
    """Write the named parameters of ``model`` to the safetensors file ``path``."""
    save_file(tensors_of(model, names), str(path))


def load_tensors(model: nn.Module, path: Path, required: str | None = None) -> None:
    """Copy the tensors of ``path`` into ``model``'s parameters of the same names.

    Every parameter whose name contains ``required`` must be in the file (a partial file would otherwise leave
    random weights behind silently); unknown names are refused too.
    """
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


def load_trainables(model: nn.Module, path: Path, names: list[str]) -> None:
    """``load_tensors`` of a file that must hold exactly the parameters ``names`` (a saved trainable set)."""
    load_tensors(model, path)
    with safe_open(str(path), framework="pt") as fh:
        stored = set(fh.keys())
    missing = sorted(set(names) - stored)
    if missing:
        raise DataError(f"{path}: parameters {missing[:3]} are missing")
