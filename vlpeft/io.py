"""File helpers used everywhere: crash-safe writes of files and directories, JSON reads with clear errors.

One mechanism publishes every output (``atomic_path`` / ``atomic_dir``): the new content is built under a
staging name beside the target, then

1. a directory gets a completion marker (``.vlpeft-complete``) and the usual umask permissions;
2. the old copy, if any, is renamed aside to ``.<name>.prev``;
3. the new copy is renamed into place;
4. the old copy loses its marker, then is deleted.

A SIGKILL at any instant leaves either the complete new directory, or the complete old one (at the target or,
between steps 2 and 3, at ``.<name>.prev``), plus leftovers that ``remove_orphans`` deletes. Readers call
``require_complete`` and refuse a directory without its marker, so a half-written or half-deleted directory is
never taken for a result.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError

MARKER = ".vlpeft-complete"
_MARKER_TEXT = "vlpeft 1\n"  # constant: identical outputs must stay byte-identical (DVC, caching)
_STAGING = ".tmp-"


def _staging_prefix(path: Path) -> str:
    return f".{path.name}{_STAGING}"


def prev_path(path: str | Path) -> Path:
    """Where the previous copy of directory ``path`` waits while a replacement is renamed in."""
    path = Path(path)
    return path.parent / f".{path.name}.prev"


def _check_parent(path: Path) -> None:
    """``DataError`` naming the culprit when ``path``'s directory cannot exist (an ancestor is a file)."""
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise DataError(f"{path}: cannot write here, {ancestor} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{path}: cannot create its directory ({exc.strerror or exc})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise DataError(f"{path}: directory {path.parent} is not writable")


def check_writable(*paths: str | Path | None) -> None:
    """``DataError`` naming the culprit unless each output path (None: skipped) can be written: its nearest
    existing ancestor is a writable directory. Nothing is created; stages call this before any work."""
    for p in paths:
        if p is None:
            continue
        path = Path(p).absolute()
        for ancestor in path.parents:
            if ancestor.exists():
                if not ancestor.is_dir():
                    raise DataError(f"{p}: cannot write here, {ancestor} is a file, not a directory")
                if not os.access(ancestor, os.W_OK | os.X_OK):
                    raise DataError(f"{p}: directory {ancestor} is not writable")
                break


def ensure_dir(path: str | Path) -> Path:
    """Create directory ``path`` (and its parents); a parent that is a file, or no permission, is a
    ``DataError`` naming the path. Returns ``path``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file, not a directory")
    _check_parent(path)
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise DataError(f"{path}: cannot create the directory ({exc.strerror or exc})") from None
    return path


def _alive(owner: str) -> bool:
    """Whether the writer of a staging dir (``<host>-<pid>``) may still be running: a process of this host
    that exists, or any process of another host (which cannot be checked from here)."""
    host, _, pid = owner.rpartition("-")
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_orphans(path: str | Path, *, sole_writer: bool = False) -> list[Path]:
    """Delete what interrupted writes of ``path`` left beside it; return what was removed.

    Staging dirs go when their writer is dead (or always with ``sole_writer``: the caller knows nobody else
    writes ``path``, e.g. the trainer of a checkpoint dir, whose restarted container may reuse a pid); the
    ``.prev`` copy goes once ``path`` is complete (or when it is incomplete itself).
    """
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    prefix = _staging_prefix(path)
    legacy = f".{path.name}.tmp"  # checkpoint staging dirs of earlier versions
    for child in path.parent.iterdir():
        if child.name.startswith(prefix):
            owner = child.name[len(prefix) :].rsplit(".", 1)[0]
            if sole_writer or not _alive(owner):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
        elif sole_writer and child.name.startswith(legacy):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    prev = prev_path(path)
    if prev.exists() and (is_complete(path) or not is_complete(prev)):
        _discard(prev)
        removed.append(prev)
    return removed


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a directory published whole by ``atomic_dir`` (its marker is present)."""
    return (Path(path) / MARKER).is_file()


def require_complete(path: str | Path, what: str, hint: str) -> Path:
    """``path`` if it is a complete directory; else a ``DataError`` naming it, what it should be and ``hint``
    (the command that writes it)."""
    path = Path(path)
    if not path.is_dir():
        extra = f"; a complete previous copy is at {prev_path(path)}" if is_complete(prev_path(path)) else ""
        raise DataError(f"{path}: {what} not found ({hint}){extra}")
    if not is_complete(path):
        raise DataError(
            f"{path}: incomplete {what} (no {MARKER} marker: its writing was interrupted or it was not "
            f"written by vlpeft); {hint}"
        )
    return path


def _discard(path: Path) -> None:
    # The marker goes first: a deletion killed half-way leaves no directory that still looks complete.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        (path / MARKER).unlink()
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _finish_tree(root: Path) -> None:
    """Umask permissions on every file and directory (safetensors and mkdtemp write 0600/0700), then fsync:
    a rename is only as durable as the bytes behind it."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if p.is_symlink():
            continue
        if p.is_dir():
            p.chmod(0o777 & ~umask)
        elif p.is_file():
            p.chmod(0o666 & ~umask)
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def _publish_dir(tmp: Path, path: Path) -> None:
    (tmp / MARKER).write_text(_MARKER_TEXT)
    _finish_tree(tmp)
    remove_orphans(path)
    prev = prev_path(path)
    if path.exists() or path.is_symlink():
        if prev.exists():
            _discard(prev)
        os.replace(path, prev)
    os.replace(tmp, path)
    if prev.exists():
        _discard(prev)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# How libraries that do not raise OSError say it (safetensors' Rust IoError, tokenizers...).
_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "Disk quota exceeded", "File too large")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` means the disk (or quota, or file size limit) is full."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    return any(t in str(exc) for t in _DISK_FULL_TEXT)


@contextlib.contextmanager
def disk_full_names(path: str | Path) -> Iterator[None]:
    """Within the block, a full disk is a ``DataError`` naming ``path`` and "no space left" (one line), not a
    traceback from whatever write ran into it (``json.dump``, a zip member, a safetensors file)."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None) or path
        raise DataError(f"{where}: no space left on device (free some space, then run again)") from None


def save_tensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` whose failures name the file (a full disk: "no space left")."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except Exception as exc:
        if is_disk_full(exc):
            raise DataError(f"{path}: no space left on device (free some space, then run again)") from None
        if type(exc).__name__ == "SafetensorError":
            reason = " ".join(str(exc).split())[:200]
            raise DataError(f"{path}: cannot write safetensors file ({reason})") from None
        raise


# Formats ``torch.load``/``pickle`` would read: code execution on load, so never read, and refused on sight
# in a folder we load weights from (a file there is a file someone meant us to load).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def refuse_pickles(directory: str | Path, what: str = "model folder") -> None:
    """``DataError`` naming the first pickle-format file (``.bin``, ``.pt``...) under ``directory``: weights
    are read from safetensors only, and a pickle beside them is not silently skipped either."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file():
            raise DataError(
                f"{path}: pickle-format file in a {what} refused (loading it could run code); weights are "
                "read from .safetensors files only: remove it"
            )


# ------------------------------------------------------------------------- one writer per output dir


def lock_path(path: str | Path) -> Path:
    """The lock file beside output ``path`` (kept after use: deleting a lock file races with its takers)."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_output(path: str | Path, what: str = "run") -> Iterator[None]:
    """Hold the lock of output ``path`` for the block; another process holding it is a one-line
    ``DataError`` (two trainings into one ``--out`` would silently mix their results). The kernel releases
    the lock when its holder dies, so a killed run never leaves ``path`` locked."""
    path = Path(path)
    _check_parent(path)
    lock = lock_path(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise DataError(
                f"{path}: another {what} is writing here ({holder}); wait for it to end or choose another "
                "output"
            ) from None
        with disk_full_names(lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def partial_path(path: str | Path) -> Path:
    """Where a run writing output directory ``path`` builds it (``.<name>.partial`` beside it): the earlier
    output stays whole at ``path`` until :func:`publish_partial` swaps the finished new one in."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def publish_partial(path: str | Path) -> None:
    """Publish the finished ``partial_path(path)`` at ``path`` (marker, old copy aside, swap, old deleted)."""
    path = Path(path)
    with disk_full_names(path):
        _publish_dir(partial_path(path), path)


def remove_output(path: str | Path) -> None:
    """Delete output directory ``path`` with its unfinished build and its lock file."""
    path = Path(path)
    for p in (path, partial_path(path)):
        shutil.rmtree(p, ignore_errors=True)
    lock_path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success publish what the caller made there, on failure delete it.

    Works for files (renamed over ``path``) and directories (published as the module docstring says: marker,
    old copy aside, new copy in, old copy deleted). The parent directory is created; a parent that is a file
    or not writable is a ``DataError`` naming it.
    """
    path = Path(path)
    _check_parent(path)
    owner = f"{socket.gethostname()}-{os.getpid()}"
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(path)}{owner}.", dir=path.parent))
    tmp = staging / path.name
    try:
        with disk_full_names(path):
            yield tmp
            if tmp.is_dir() and not tmp.is_symlink():
                _publish_dir(tmp, path)
            elif tmp.exists() or tmp.is_symlink():
                if path.is_dir() and not path.is_symlink():
                    raise DataError(f"{path}: is a directory, cannot replace it with a file")
                if not tmp.is_symlink():
                    _finish_tree(tmp)
                os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """``atomic_path`` for a directory: yields the (created, empty) staging directory to fill."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        yield tmp


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """Write JSON atomically (temp file, then rename): never a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=indent)
        fh.write("\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read JSON; a missing or malformed file is a ``DataError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
