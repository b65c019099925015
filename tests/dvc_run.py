"""Run the pinned DVC from this interpreter (no skip, no reliance on PATH): the one way tests call DVC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_dvc(args: list[str], cwd: Path) -> str:
    """``python -m dvc <args>`` in ``cwd``; its stdout, or an assertion error carrying DVC's stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
