"""Paths named inside data files, kept inside their roots (data preparation never reads or writes elsewhere).

A file name in a Karpathy split file, a VQA list or a caption file is data, not a path to trust: an absolute
name or a ``..`` step would make ``vlpeft data prepare`` link (or copy over) files outside the data root or
the output directory.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from vlpeft.errors import DataError


def relative_name(name: object, where: str) -> PurePosixPath:
    """``name`` as a relative path without ``..`` steps (``DataError`` naming ``where`` otherwise)."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}: image file name must be a non-empty string, got {name!r}")
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{where}: image file name {name!r} is an absolute path (it must be relative)")
    if any(part == ".." for part in rel.parts):
        raise DataError(f"{where}: image file name {name!r} leaves its folder ('..')")
    parts = [p for p in rel.parts if p != "."]
    if not parts:
        raise DataError(f"{where}: image file name {name!r} names no file")
    return PurePosixPath(*parts)


def inside(root: Path, name: object, where: str) -> Path:
    """``root / name`` for a relative ``name`` without ``..`` steps (``DataError`` naming ``where`` otherwise).

    The check is on the name (what a data file controls): a file or folder that the user made a symlink
    inside the root is their own layout and is followed.
    """
    return Path(root) / relative_name(name, where)


def destination(out_root: Path, name: object, where: str) -> Path:
    """Where an image named ``name`` goes under the fresh directory ``out_root`` (parents created); a name
    used twice is refused rather than overwriting the first file."""
    dst = inside(out_root, name, where)
    if dst.exists() or dst.is_symlink():
        raise DataError(f"{where}: image file {name!r} is named twice")
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst
