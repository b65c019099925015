"""CLI commands of the `pretrain` group (see vlpeft/cli/__init__.py for the rules)."""

from __future__ import annotations

from vlpeft.cli import app  # noqa: F401
