"""What a tracked run records, named one way: the params sections a stage reads, metric keys, run names.

**Params**: a run logs the params sections its stage reads (``STAGE_SECTIONS``, the same lists as the
stage's ``params:`` in ``dvc.yaml``), not the whole ``params.yaml`` (278 keys, ``kfp.*`` included, for a
local training). ``{task}`` is the task after ``@`` in the stage name (``train@vqa`` reads ``vqa``).

**Metric keys**: ``group/name``: ``/`` only between a group and a name, never inside one; the parts of
flattened results (``{"test": {"perAnswerType": {"yes/no": 71}}}``) are joined with ``/`` and a ``/`` or ``.``
inside a part becomes ``_`` (``test/perAnswerType/yes_no``): MLflow's UI groups charts by the ``/`` prefix.
Keys already in the scheme (``train/loss``) are unchanged, so ``metric_key`` is idempotent and also maps
names logged before this scheme (``perAnswerType.yes/no``) onto it.

**Run names**: ``<stage or DVC stage>-<8 hex>`` (``train@vqa-best-0-1f3a9c2e``): unique, and still saying
which stage and variant ran; explicit names (sweep trials: ``<study>-trial-<n>``) are kept.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any

# Stage (the part before ``@``) -> the params sections (or dotted keys) it reads.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("seed", "world", "data"),
    "pretrain": ("seed", "pretrain"),
    "features": ("features", "model"),
    "sweep": ("seed", "data", "model", "features", "evaluate", "sweep", "tracking", "{task}"),
    "train": ("seed", "data", "model", "evaluate", "tracking", "{task}"),
    "register": ("registry", "tracking"),
    "summary": ("seeds", "variants"),
}


def stage_params(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The sections of the resolved params (``params_to_dict``) that ``stage`` reads (``STAGE_SECTIONS``).

    A stage not in the table logs every section but ``kfp`` (the Kubeflow settings are read by the pipeline
    compiler, never by a stage running).
    """
    kind, _, task = stage.partition("@")
    sections = STAGE_SECTIONS.get(kind)
    if sections is None:
        return {k: v for k, v in params.items() if k != "kfp"}
    out: dict[str, Any] = {}
    for entry in sections:
        entry = entry.replace("{task}", task)
        if entry and entry in params:
            out[entry] = params[entry]
    return out


def metric_key(key: str) -> str:
    """``key`` in the ``group/name`` scheme (see the module docstring)."""
    if "." not in key:
        return key
    return "/".join(part.replace("/", "_") for part in key.split("."))


def metric_values(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, float]:
    """Numeric leaves of nested results as ``{"test/perAnswerType/yes_no": 71.0}`` (text, null, bools
    skipped)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        parts = (*prefix, str(key).replace("/", "_").replace(".", "_"))
        if isinstance(value, Mapping):
            out.update(metric_values(value, parts))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out["/".join(parts)] = float(value)
    return out


def run_name(stage: str, explicit: str | None = None) -> str:
    """The MLflow run name of one execution of ``stage`` (see the module docstring)."""
    if explicit:
        return explicit
    base = os.environ.get("DVC_STAGE") or stage
    return f"{base}-{uuid.uuid4().hex[:8]}"
