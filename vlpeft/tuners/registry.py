"""The PEFT method registry: every method is one package that registers itself here by name.

In the spirit of peft's ``register_peft_method``: a method declares its name, its own config section (a
``MethodOptions`` model, read from ``peft.<name>`` in params), what it supports (a bottleneck that routing can
sit in, the vision tower) and where its implementation lives. Declarations are light (pydantic only), so
``vlpeft.config`` can build the ``peft`` section from them without importing torch; the implementation (a
``PeftMethod``) is imported on first use.

Adding a method = a package ``vlpeft/tuners/<name>/`` whose ``__init__`` calls ``register_method`` and one
import line in ``vlpeft/tuners/__init__.py``. Nothing in ``train/``, ``cli/`` or ``models/`` changes.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vlpeft.config_base import Section

if TYPE_CHECKING:
    import torch.nn as nn

    from vlpeft.config import PeftConfig


class MethodOptions(Section):
    """Base of a method's own config section: the rules of every params section (unknown keys are errors,
    assignments are validated, no boolean is taken for a number)."""


class PeftMethod(Protocol):
    """What a method implements (a module-level object of its package's ``method`` module).

    ``apply`` freezes what the method does not train and returns ``(model to use, adapted module names)``;
    ``save`` writes the method's files into a new directory; ``load`` rebuilds the method on a fresh base
    model and loads its weights (``state`` = the saved settings file, ``is_trainable``: to resume training).
    The common policy (LayerNorms, the trainable set, the settings file) lives in ``vlpeft.tuners.api``.
    """

    def apply(self, model: nn.Module, cfg: PeftConfig, family: str) -> tuple[nn.Module, list[str]]: ...

    def save(self, model: nn.Module, out_dir: Path, trainable: list[str]) -> None: ...

    def load(
        self,
        base_model: nn.Module,
        peft_dir: Path,
        cfg: PeftConfig,
        state: dict[str, Any],
        is_trainable: bool,
    ) -> nn.Module: ...


@dataclass(frozen=True)
class MethodSpec:
    """One registered method (see the module docstring).

    ``options``: the method's config class, the section ``peft.<name>`` (``None`` = no own settings).
    ``bottleneck``: the method has a down-projection that routing can act on (routing kinds other than
    ``none`` are refused otherwise). ``ranked``: ``peft.rank`` means something for it. ``common_trainables``:
    ``peft.train_layernorm`` / ``peft.bias`` apply (not for ``full``/``frozen``, which decide everything).
    ``vision_tower``: usable as ``model.vision_tower`` (no visual routing, no task context).
    ``families``: transformers ``model_type``s it supports (``None`` = every family with targets).
    ``implementation``: ``"module:attribute"`` of its ``PeftMethod``.
    ``state_files``: the files it writes next to ``vlpeft_peft.json`` (documentation and checks).
    ``markers``: substrings that identify its own parameters' names (peft's ``prefix``, e.g. ``lora_``), so
    accounting can tell the method's parameters from trainable LayerNorms or biases.
    ``sharing``: the ``peft.sharing`` modes it supports across tasks (``single`` = one set for all).
    """

    name: str
    implementation: str
    options: type[MethodOptions] | None = None
    bottleneck: bool = False
    ranked: bool = False
    common_trainables: bool = True
    vision_tower: bool = False
    families: tuple[str, ...] | None = None
    state_files: tuple[str, ...] = field(default_factory=tuple)
    markers: tuple[str, ...] = field(default_factory=tuple)
    sharing: tuple[str, ...] = ("single",)
    description: str = ""

    def impl(self) -> PeftMethod:
        """The method's implementation (imported on first use)."""
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)

    def supports(self, family: str) -> bool:
        """Whether the method can be applied to models of ``family``."""
        return self.families is None or family in self.families

    def setting_problem(self, routing: str, sharing: str) -> str | None:
        """Why ``peft.routing`` / ``peft.sharing`` cannot go with this method (one line), or None."""
        if routing != "none" and not self.bottleneck:
            return (
                f"peft.routing={routing} needs method {' or '.join(list_methods(bottleneck=True))} "
                f"(got {self.name}, which has no bottleneck for the visual features to enter)"
            )
        if sharing not in self.sharing:
            return (
                f"peft.sharing={sharing} is not available for method {self.name} "
                f"(available: {', '.join(self.sharing)})"
            )
        return None


_METHODS: dict[str, MethodSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry; refuses a duplicate or a name that is not lower-case snake case.

    The name is also the key of the method's own section under ``peft``, so it must not collide with a
    common ``peft`` setting.
    """
    if not _NAME.match(spec.name):
        raise ValueError(f"PEFT method name {spec.name!r} must be lower-case snake case")
    if spec.name in _METHODS:
        raise KeyError(f"PEFT method {spec.name!r} is already registered")
    _METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The registered method ``name`` (``KeyError`` naming the registered ones otherwise)."""
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(list_methods())
        raise KeyError(f"PEFT method {name!r} is not registered (known: {known})") from None


def list_methods(**capabilities: bool) -> list[str]:
    """Names of the registered methods in registration order, optionally only those whose spec has the
    given capability values, e.g. ``list_methods(bottleneck=True)``."""
    return [
        name
        for name, spec in _METHODS.items()
        if all(getattr(spec, key) == value for key, value in capabilities.items())
    ]


def method_specs() -> list[MethodSpec]:
    """Every registered spec, in registration order."""
    return list(_METHODS.values())


def method_owns(param_name: str) -> bool:
    """Whether ``param_name`` belongs to a registered method's own modules (by its ``markers``)."""
    return any(marker in param_name for spec in _METHODS.values() for marker in spec.markers)
