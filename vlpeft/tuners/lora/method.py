"""LoRA as a registered method: peft's ``get_peft_model`` with ``RoutedLoraLinear`` where routing or slices
differ from peft's own layer; peft's files on disk.

Files: ``adapter_config.json`` + ``adapter_model.safetensors`` (peft's ``save_pretrained``). The trainables
that are not LoRA A/B (LayerNorms ...) are peft's ``modules_to_save`` when plain peft can load the adapter,
else in ``extra_trainable.safetensors`` under our names and the config is marked vlpeft-only
(``vlpeft.tuners.lora.portable``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError, DataError
from vlpeft.tuners.lora.layer import RoutedLoraLinear, is_own_layer, lora_layers, routed_lora_config
from vlpeft.tuners.lora.portable import (
    load_modules,
    mark_vlpeft_only,
    modules_to_save,
    read_lora_config,
    write_modules_to_save,
)
from vlpeft.tuners.targets import fan_in_fan_out, fused_lora_layout, lora_targets
from vlpeft.tuners.trainable import load_tensors, save_tensors, unfreeze_biases

EXTRA_FILE = "extra_trainable.safetensors"


def lora_config(cfg: PeftConfig, family: str) -> LoraConfig:
    """The ``LoraConfig`` equivalent to ``cfg`` (routing registered when it is not ``none``).

    Per task, peft refuses ``bias`` other than ``none`` with several adapters, so biases are unfrozen by us.
    """
    per_task = cfg.sharing == "per_task"
    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        bias="none" if per_task else cfg.bias,
        target_modules=lora_targets(family, cfg.target_modules),
        fan_in_fan_out=fan_in_fan_out(family),
    )
    return routed_lora_config(
        config, cfg.routing, *fused_lora_layout(family, cfg.fused_qkv), per_task=per_task
    )


def _adapter_names(cfg: PeftConfig) -> list[str]:
    """peft adapter names: the tasks when per task (``ConfigError`` without tasks), else peft's default."""
    if cfg.sharing != "per_task":
        return ["default"]
    if not cfg.tasks:
        raise ConfigError("peft.sharing per_task needs peft.tasks (set from multitask.tasks)")
    return list(cfg.tasks)


def check_lora_alive(model: nn.Module) -> None:
    """Pitfall P10: a LoRA A that is all zeros never trains (init skipped inside ``from_pretrained``).

    Skipped on the meta device (no values; parameter accounting builds models there).
    """
    for name, layer in lora_layers(model):
        for adapter, lin in layer.lora_A.items():
            if lin.weight.is_meta:
                continue
            if not torch.any(lin.weight != 0):
                raise RuntimeError(
                    f"LoRA A of {name} (adapter {adapter}) is all zeros: its initialisation was skipped; "
                    "apply PEFT after from_pretrained, outside any init-skipping context"
                )


def check_targets(model: nn.Module, targets: list[str]) -> None:
    """``ConfigError`` for a target module name that matches no module (peft matches name suffixes and only
    complains when no target matches at all; a misspelt one would silently adapt less)."""
    names = [n for n, _ in model.named_modules() if n]
    for target in targets:
        if not any(n == target or n.endswith(f".{target}") for n in names):
            weighted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_projection(m)}
            raise ConfigError(
                f"peft.target_modules: {target!r} matches no module of {type(model).__name__} "
                f"(its projections: {', '.join(sorted(weighted)[:12])})"
            )


def _is_projection(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 2 and not isinstance(module, nn.Embedding)


def _sort_target_modules(path: Path) -> None:
    """peft writes ``target_modules`` from a set, in an order that changes between identical runs (hash
    seed): list them sorted, so identical runs write identical files (DVC, caching)."""
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        path.write_text(json.dumps(config, indent=2, sort_keys=True))


def _is_lora_weight(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


class LoraMethod:
    """``PeftMethod`` for ``lora`` (see the module docstring)."""

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]:
        config = lora_config(cfg, family)
        check_targets(model, list(config.target_modules or []))
        first, *others = _adapter_names(cfg)
        try:
            model = get_peft_model(model, config, adapter_name=first)
        except ValueError as exc:  # peft's own refusal of a target: a config mistake, said in one line
            raise ConfigError(f"peft.target_modules: {' '.join(str(exc).split())[:200]}") from None
        for task in others:  # one adapter per task; peft adds them frozen, every task's adapter trains
            model.add_adapter(task, lora_config(cfg, family))
        if others:
            for name, p in model.named_parameters():
                if _is_lora_weight(name):
                    p.requires_grad_(True)
            unfreeze_biases(model, cfg.bias, [f"{n}.base_layer.bias" for n, _ in lora_layers(model)])
        check_lora_alive(model)
        return model, [n for n, _ in lora_layers(model)]

    def save(self, model: nn.Module, out_dir: Path, trainable: list[str]) -> None:
        if not isinstance(model, PeftModel):
            raise ValueError("method lora expects the PeftModel returned by apply_peft")
        model.save_pretrained(str(out_dir))
        for config_file in sorted(out_dir.rglob("adapter_config.json")):  # per task: one sub-folder each
            _sort_target_modules(config_file)
        reason = _vlpeft_only_reason(model)
        modules: list[str] = []
        if reason is None:
            # Trainables peft saved itself (biases with peft's ``bias``) load back in plain peft as they are.
            saved = set(load_file(str(out_dir / "adapter_model.safetensors")))
            extra = [n for n in trainable if not _is_lora_weight(n) and n not in saved]
            if extra:
                modules, reason = modules_to_save(model, extra, set(trainable))
        if reason is None:
            write_modules_to_save(model, out_dir, modules)
            return
        mark_vlpeft_only(out_dir, reason)
        extra = [n for n in trainable if not _is_lora_weight(n)]
        if extra:
            save_tensors(model, extra, out_dir / EXTRA_FILE)

    def load(
        self,
        base_model: nn.Module,
        peft_dir: Path,
        cfg: PeftConfig,
        state: dict[str, Any],
        is_trainable: bool,
    ) -> nn.Module:
        family = state["family"]
        slices, fused = fused_lora_layout(family, cfg.fused_qkv)
        per_task = cfg.sharing == "per_task"
        first, *others = _adapter_names(cfg)
        # peft writes the adapter "default" at the top and every other one into a sub-folder of its name.
        where = {n: peft_dir if n == "default" else peft_dir / n for n in (first, *others)}
        lora_cfg, modules = read_lora_config(where[first])
        config = routed_lora_config(lora_cfg, cfg.routing, slices, fused, per_task=per_task)
        model = PeftModel.from_pretrained(
            base_model, str(where[first]), adapter_name=first, config=config, is_trainable=is_trainable
        )
        for task in others:  # onto the existing (custom) layers: peft calls update_layer on them
            # The config read by us (peft refuses the vlpeft-only marker); load_adapter then loads the weights
            # of the adapter already there. ``load_peft`` sets the trainable set afterwards.
            task_cfg = read_lora_config(where[task])[0]
            task_cfg = routed_lora_config(task_cfg, cfg.routing, slices, fused, per_task=per_task)
            task_cfg.inference_mode = not is_trainable
            model.add_adapter(task, task_cfg)
            model.load_adapter(str(where[task]), adapter_name=task, is_trainable=is_trainable)
        layers = lora_layers(model)
        ours = [n for n, m in layers if isinstance(m, RoutedLoraLinear)]
        expected = [n for n, _ in layers if is_own_layer(n, cfg.routing, slices, fused, per_task)]
        if not layers or ours != expected:
            raise DataError(
                f"{peft_dir}: LoRA layers did not load as routing={cfg.routing}, fused_qkv={cfg.fused_qkv}"
            )
        if modules:
            load_modules(model, where[first], modules)
        if (peft_dir / EXTRA_FILE).is_file():  # vlpeft-only adapters, and every save before modules_to_save
            load_tensors(model, peft_dir / EXTRA_FILE)
        return model


def _vlpeft_only_reason(model: PeftModel) -> str | None:
    """Why plain peft cannot load ``model``'s adapter correctly, or None when it can."""
    own = [n for n, m in lora_layers(model) if isinstance(m, RoutedLoraLinear)]
    if len(model.peft_config) > 1:
        return "one LoRA adapter per task, selected by vlpeft's task context"
    if own:
        layer = dict(lora_layers(model))[own[0]]
        if getattr(layer, "routing", "none") != "none":
            return f"routed LoRA, routing={layer.routing}: the visual features enter every LoRA bottleneck"
        return "LoRA on some thirds of a fused QKV projection (peft.fused_qkv)"
    return None


METHOD = LoraMethod()
