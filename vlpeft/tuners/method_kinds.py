"""The two shapes most ``PeftMethod``s take, so each method package states only what is its own.

``InjectedMethod``: freeze the backbone, inject the method's modules (adapters, Compacter, Hyperformer,
prompt), unfreeze the wrapped layers' biases per ``peft.bias``; save = the trainable tensors in one file;
load = inject again on a fresh base model and copy the file in, refusing a file that misses any of the
method's own parameters and (optionally) a base model whose number of wrapped positions differs.

``TrainablesMethod``: nothing is injected; ``unfreeze`` picks backbone parameters (BitFit, LayerNorm-only);
load copies the saved trainable tensors back by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from vlpeft.config import PeftConfig
from vlpeft.errors import DataError
from vlpeft.tuners.adapter.layer import adapted_outputs
from vlpeft.tuners.trainable import load_tensors, load_trainables, save_tensors, unfreeze_biases


@dataclass(frozen=True)
class InjectedMethod:
    """``PeftMethod`` for a method that adds modules (see the module docstring).

    ``inject(model, cfg, family)`` adds them and returns the wrapped module names; ``required``: a substring
    of every own parameter's name (all must be in the file); ``mismatch``: the error's tail when the base
    model's count of wrapped outputs differs from the saved one (``None``: no wrapped outputs to count).
    """

    weights_file: str
    inject: Callable[[nn.Module, PeftConfig, str], list[str]]
    required: str
    mismatch: str | None = None

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        adapted = self.inject(model, cfg, family)
        unfreeze_biases(model, cfg.bias, [f"{n}.base.bias" for n in adapted])
        return model, adapted

    def save(self, model: nn.Module, out_dir: Path, trainable: list[str]) -> None:
        save_tensors(model, trainable, out_dir / self.weights_file)

    def load(
        self,
        base_model: nn.Module,
        peft_dir: Path,
        cfg: PeftConfig,
        state: dict[str, Any],
        is_trainable: bool,
    ) -> nn.Module:
        base_model.requires_grad_(False)
        self.inject(base_model, cfg, state["family"])
        load_tensors(base_model, peft_dir / self.weights_file, required=self.required)
        if self.mismatch is not None and len(adapted_outputs(base_model)) != len(state["adapted"]):
            raise DataError(f"{peft_dir}: {len(state['adapted'])} {self.mismatch}")
        return base_model


@dataclass(frozen=True)
class TrainablesMethod:
    """``PeftMethod`` for a method that only unfreezes backbone parameters (see the module docstring)."""

    weights_file: str
    unfreeze: Callable[[nn.Module, PeftConfig], None]

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        model.requires_grad_(False)
        self.unfreeze(model, cfg)
        return model, []

    def save(self, model: nn.Module, out_dir: Path, trainable: list[str]) -> None:
        save_tensors(model, trainable, out_dir / self.weights_file)

    def load(
        self,
        base_model: nn.Module,
        peft_dir: Path,
        cfg: PeftConfig,
        state: dict[str, Any],
        is_trainable: bool,
    ) -> nn.Module:
        load_trainables(base_model, peft_dir / self.weights_file, state["trainable"])
        return base_model
