"""Where a run's code and data came from: git commit (+ dirty flag) and DVC hashes read from ``dvc.lock``.

Everything here is best-effort and never raises for a missing git checkout or lock file: provenance is a
label on a run, not a precondition for running.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

CODE_SUFFIXES = (".py", ".toml", ".cfg")
UNKNOWN = "unknown"


def _git(args: list[str], cwd: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(cwd: str | Path = ".") -> str:
    """The checked-out commit (full SHA), or ``"unknown"`` outside a git repository."""
    return _git(["rev-parse", "HEAD"], cwd) or UNKNOWN


def git_dirty(cwd: str | Path = ".") -> bool | None:
    """True when tracked files differ from the commit; None outside a git repository.

    Untracked files are ignored: pipeline outputs (metrics, models) are untracked by design.
    """
    out = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return None if out is None else bool(out)


def read_lock(lock_path: str | Path = "dvc.lock") -> dict[str, Any]:
    """The ``stages`` mapping of a ``dvc.lock`` file; empty when it is missing or unreadable."""
    path = Path(lock_path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    stages = data.get("stages", {}) if isinstance(data, dict) else {}
    return stages if isinstance(stages, dict) else {}


def _entry_hash(entry: dict[str, Any]) -> str | None:
    # DVC 3 writes `hash: md5` + `md5: <hex>`; directories carry a `.dir` suffix on the md5.
    for key in ("md5", "etag", "checksum"):
        if entry.get(key):
            return str(entry[key])
    return None


def _is_code(path: str) -> bool:
    return path.endswith(CODE_SUFFIXES) or path.startswith("vlpeft/") or path == "vlpeft"


def stage_dep_hashes(stage: str, lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """``{dep path: hash}`` for the non-code deps of ``stage`` (e.g. ``train@vqa``) in ``dvc.lock``.

    A dep that is an output of another stage takes that stage's recorded output hash: upstream stages have
    already run (and rewritten their lock entries) when this stage starts, whereas this stage's own entry
    is still the one from its previous run. Code deps are left out; the git commit versions code.
    """
    stages = read_lock(lock_path)
    own = stages.get(stage)
    if not isinstance(own, dict):
        return {}
    produced: dict[str, str] = {}
    for name, entry in stages.items():
        if name == stage or not isinstance(entry, dict):
            continue
        for out in entry.get("outs", []) or []:
            if isinstance(out, dict) and out.get("path") and _entry_hash(out):
                produced[str(out["path"])] = str(_entry_hash(out))
    hashes: dict[str, str] = {}
    for dep in own.get("deps", []) or []:
        if not isinstance(dep, dict) or not dep.get("path") or _is_code(str(dep["path"])):
            continue
        path = str(dep["path"])
        value = produced.get(path) or _entry_hash(dep)
        if value:
            hashes[path] = value
    return hashes


def producing_stage(path: str | Path, lock_path: str | Path = "dvc.lock") -> str | None:
    """The ``dvc.lock`` stage whose output is ``path`` or contains it (e.g. ``train@vqa-best`` for
    ``artifacts/train/vqa-best/best``); None when no stage made it."""
    lock_path = Path(lock_path)
    target = Path(path).resolve()
    for name, entry in read_lock(lock_path).items():
        for out in (entry.get("outs", []) or []) if isinstance(entry, dict) else []:
            if not isinstance(out, dict) or not out.get("path"):
                continue
            out_path = (lock_path.parent / str(out["path"])).resolve()
            if target == out_path or out_path in target.parents:
                return str(name)
    return None


def data_version(stage: str, lock_path: str | Path = "dvc.lock") -> str:
    """One short digest of a stage's data deps (see ``stage_dep_hashes``), or ``"unknown"``.

    Two runs with the same data version read byte-identical data, features and backbones.
    """
    hashes = stage_dep_hashes(stage, lock_path)
    if not hashes:
        return UNKNOWN
    text = "\n".join(f"{p} {h}" for p, h in sorted(hashes.items()))
    return hashlib.md5(text.encode()).hexdigest()[:16]


def provenance_tags(stage: str | None, cwd: str | Path | None = None) -> dict[str, str]:
    """Tags every run carries: stage (+ ``dvc_stage`` under DVC), git commit + dirty flag (also MLflow's own
    source tag) and the data version.

    ``cwd`` is the project directory (default: the project root above the current directory), where git runs
    and ``dvc.lock`` is read.
    """
    from vlpeft.tracking.preflight import project_root

    root = Path(cwd) if cwd is not None else project_root()
    commit = git_commit(root)
    dirty = git_dirty(root)
    tags = {
        "git_commit": commit,
        "git_dirty": UNKNOWN if dirty is None else str(dirty).lower(),
        "mlflow.source.git.commit": commit,
    }
    # Under `dvc repro` DVC names the exact stage (``train@vqa-best``) in $DVC_STAGE: its deps give the hash.
    dvc_stage = os.environ.get("DVC_STAGE")
    if dvc_stage:
        tags["dvc_stage"] = dvc_stage
    if stage:
        tags["stage"] = stage
    if stage or dvc_stage:
        tags["dvc_data_hash"] = data_version(dvc_stage or str(stage), root / "dvc.lock")
    return tags
