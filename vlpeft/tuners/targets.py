"""Where PEFT modules go: the family table's defaults (``vlpeft.families.FAMILIES``) or the user's names.

LoRA targets are peft ``target_modules`` names (matched against the end of each module name). Adapter
positions are regular expressions matched (``re.search``) against full module names; a user's
``target_modules`` are module-name suffixes turned into such expressions.

A family without defaults raises ``MissingTargetsError``: one line naming the field that sets the targets of
the tower at hand (``peft.target_modules`` for the language tower, ``peft.vision_target_modules`` for the
vision tower, see ``MissingTargetsError.for_field``).
"""

from __future__ import annotations

import re

from vlpeft.errors import ConfigError
from vlpeft.families import FAMILIES

QKV_SLICES: dict[str, tuple[str, ...] | None] = {"qv": ("q", "v"), "all": None}


class MissingTargetsError(ConfigError):
    """The family has no default targets for ``what`` (LoRA targets / adapter positions / ...)."""

    def __init__(self, family: str, what: str, known: list[str], field: str = "peft.target_modules") -> None:
        self.family, self.what, self.known, self.field = family, what, known, field
        super().__init__(
            f"model family {family!r} has no default {what} (known: {', '.join(known)}); set {field} "
            "to the names of its linear layers (module-name suffixes, e.g. [q_proj, v_proj])"
        )

    def for_field(self, field: str, where: str = "") -> ConfigError:
        """The same error naming ``field`` (the tower's own targets setting), prefixed by ``where``."""
        err = MissingTargetsError(self.family, self.what, self.known, field)
        return ConfigError(f"{where}: {err}" if where else str(err))


def _known(what: str) -> list[str]:
    attr = {"LoRA targets": "lora", "adapter positions": "adapter"}[what]
    return sorted(name for name, fam in FAMILIES.items() if getattr(fam, attr))


def lora_targets(family: str, override: list[str] | None = None) -> list[str]:
    """The LoRA ``target_modules`` for ``family`` (``override`` wins when given)."""
    if override:
        return list(override)
    fam = FAMILIES.get(family)
    if fam is None or not fam.lora:
        raise MissingTargetsError(family, "LoRA targets", _known("LoRA targets"))
    return list(fam.lora)


def adapter_patterns(family: str, positions: list[str], override: list[str] | None = None) -> list[str]:
    """Regular expressions selecting the modules whose output gets an adapter.

    ``override`` (``peft.target_modules``) are module-name suffixes, used instead of the family default.
    Positions the family does not have (a CNN has no attention) are skipped; none left is an error.
    """
    if override:
        return [r"(^|\.)" + re.escape(p) + "$" for p in override]
    fam = FAMILIES.get(family)
    if fam is None or not fam.adapter:
        raise MissingTargetsError(family, "adapter positions", _known("adapter positions"))
    patterns = [fam.adapter[p] for p in positions if p in fam.adapter]
    if not patterns:
        raise ConfigError(
            f"model family {family!r} has no adapter position among {positions} (it has "
            f"{', '.join(fam.adapter)}); set peft.adapter.positions"
        )
    return patterns


def fused_lora_layout(family: str, fused_qkv: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(adapted thirds, fused module names) for ``family``: what ``routed_lora_config`` takes."""
    fam = FAMILIES.get(family)
    return QKV_SLICES[fused_qkv], (fam.fused_qkv if fam else ())


def fan_in_fan_out(family: str) -> bool:
    """Whether ``family`` stores its projection weights transposed (GPT-2's ``Conv1D``)."""
    fam = FAMILIES.get(family)
    return bool(fam and fam.conv1d)


def hyper_positions(family: str) -> tuple[tuple[str, str], ...]:
    """Hyperformer's (pattern, position type) table of ``family``."""
    fam = FAMILIES.get(family)
    if fam is None or not fam.hyper:
        known = sorted(name for name, f in FAMILIES.items() if f.hyper)
        raise ConfigError(
            f"Hyperformer has no positions for model family {family!r} (known: {', '.join(known)})"
        )
    return fam.hyper
