"""Write params files exactly as DVC's own params writer does, so a DVC round trip changes nothing else.

``dvc exp run -S key=value`` (and ``dvc exp apply``, queued experiments) rewrites the whole params file with
ruamel.yaml's round-trip writer: ``null`` becomes an empty value and double-quoted strings single-quoted.
A file already in that form is a fixed point, so such a run changes only the line of ``key``. Run this after
editing a params file (``make format`` does); ``tests/test_params_format.py`` fails while a file is not in
that form.

    python scripts/format_params.py [FILE ...]      # default: params.yaml multitask/params.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

from dvc.utils.serialize import modify_yaml

FILES = ("params.yaml", "multitask/params.yaml")


def format_params(path: str | Path) -> bool:
    """Rewrite ``path`` through DVC's writer (no value changes); return whether its text changed."""
    before = Path(path).read_text()
    with modify_yaml(str(path)):
        pass  # DVC writes the file back on leaving the block, as after applying -S overrides
    return Path(path).read_text() != before


if __name__ == "__main__":
    for name in sys.argv[1:] or FILES:
        print(f"{name}: {'rewritten' if format_params(name) else 'unchanged'}")
