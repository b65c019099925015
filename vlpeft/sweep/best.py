"""``best_params.json``: what the sweep found, as a small mapping the ``train`` stage merges over params.

Format (one key per task the file covers; only searched values)::

    {"vqa": {"peft": {"rank": 8, "routing": "mul", "method": "lora"}, "lr": 0.002}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlpeft.config import Params, deep_merge, params_from_dict, params_to_dict
from vlpeft.errors import ConfigError
from vlpeft.io import read_json
from vlpeft.tasks import list_tasks


def load_best_params(path: str | Path) -> dict[str, Any]:
    """Read and check a ``best_params.json`` (a mapping of task -> params of that task's section)."""
    data = read_json(path, "sweep best-params file")
    allowed = list_tasks(sweepable=True)
    if not isinstance(data, dict) or not data or not set(data) <= set(allowed):
        raise ConfigError(f"{path}: expected a mapping with keys among {allowed}, got {data!r:.120}")
    for task, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {task}: expected a mapping of {task} params, got {section!r:.80}")
    return data


def merge_best_params(params: Params, *paths: str | Path) -> Params:
    """``params`` with each ``best_params.json`` in ``paths`` merged over it (later files win), validated.

    Missing files are an error (the train stage asked for them); bad values name the file and the key.
    """
    merged = params_to_dict(params)
    for path in paths:
        merged = deep_merge(merged, load_best_params(path))
    return params_from_dict(merged, " + ".join(str(p) for p in paths) or "params")
