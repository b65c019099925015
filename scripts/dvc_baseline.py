"""Commit what ``dvc repro`` produced (``dvc.lock`` and the ``metrics/`` files) as the comparison baseline.

``make run`` ends with this. DVC compares a workspace with a git revision: ``dvc metrics diff``,
``dvc params diff``, ``dvc plots diff`` and ``dvc exp show`` read ``dvc.lock`` and the metrics files of
``HEAD``. On a fresh clone ``HEAD`` has neither, so the README's
``dvc exp run -S vqa.peft.rank=16 && dvc metrics diff`` printed ``-`` for every old value. With the results
of the first run committed, it shows the old value, the new one and the change.

It commits only ``dvc.lock`` and ``metrics/`` (and ``.gitignore``, which DVC edits), and only when no other
tracked file differs from ``HEAD``: a baseline must be the results *of* ``HEAD``'s code and params.
Otherwise (or outside a git work tree) it says why and changes nothing; the run itself has succeeded either
way (exit code 0).

    python scripts/dvc_baseline.py [DIR]        # DIR: the DVC project (default: the current directory)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# DVC also appends the outputs it caches to .gitignore (none of ours, while .gitignore covers them all).
BASELINE = ("dvc.lock", "metrics", ".gitignore")


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def commit_baseline(project: Path) -> str:
    """Commit ``dvc.lock`` and ``metrics/`` of ``project`` if new or changed; return what happened."""
    if _git(project, "rev-parse", "--is-inside-work-tree").returncode != 0:
        return f"{project}: not a git work tree: no baseline committed"
    present = [p for p in BASELINE if (project / p).exists()]
    if "dvc.lock" not in present:
        return f"{project}: no dvc.lock (run dvc repro first): no baseline committed"
    others = [
        line[3:]
        for line in _git(
            project, "status", "--porcelain", "--untracked-files=no", "--", "."
        ).stdout.splitlines()
        if not any(line[3:].startswith(_relative(project, p)) for p in BASELINE)
    ]
    if others:
        return (
            f"not committing the DVC baseline: {', '.join(others)} changed since HEAD, so these results "
            f"are not HEAD's; commit those changes together with {' and '.join(present)} yourself"
        )
    _git(project, "add", "--", *present)
    if _git(project, "diff", "--cached", "--quiet", "--", *present).returncode == 0:
        return "DVC baseline already committed: dvc.lock and metrics/ are HEAD's"
    head = _git(project, "rev-parse", "--short", "HEAD").stdout.strip() or "the first commit"
    message = f"DVC baseline: dvc.lock and metrics/ of `dvc repro` at {head} (make run)"
    done = _git(project, "commit", "-q", "-m", message, "--", *present)
    if done.returncode != 0:
        return f"DVC baseline not committed: {' '.join(done.stderr.split())}"
    committed = " and ".join(present)
    return f"committed the DVC baseline ({committed}): dvc metrics diff / dvc exp show now compare with it"


def _relative(project: Path, name: str) -> str:
    """``name`` as git status prints it: relative to the work tree's top (the project may be a subdir)."""
    top = Path(_git(project, "rev-parse", "--show-toplevel").stdout.strip() or project)
    return str((project / name).resolve().relative_to(top.resolve()))


if __name__ == "__main__":
    print(commit_baseline(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
