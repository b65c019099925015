"""Safe, atomic zip extraction: members that would land outside the target dir are refused.

Every member is checked before anything is written: absolute paths, ``..`` components, drive letters and
symbolic links are refused (a symlink member could point anywhere and a later member could write through it).
The archive is unpacked into a temp dir beside the target and its top-level entries are then renamed into
place, with a marker file written last, so an interrupted extraction never looks finished.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from vlpeft.errors import DataError
from vlpeft.io import disk_full_names


def _check_member(archive: Path, info: zipfile.ZipInfo, root: Path) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    why = None
    if stat.S_ISLNK(info.external_attr >> 16):
        why = "is a symbolic link"
    elif name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        why = "has an absolute path"
    elif ".." in parts:
        why = "contains '..'"
    elif not (root / name).resolve().is_relative_to(root.resolve()):
        why = "resolves outside the target directory"
    if why:
        raise DataError(f"{archive}: member {name!r} {why}; refusing to extract this archive")


def marker_path(archive: Path, dest: Path) -> Path:
    """The file that says ``archive`` was fully extracted into ``dest``."""
    return Path(dest) / f".{Path(archive).name}.extracted"


def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a zip archive into ``dest`` (created if needed); return the top-level paths it produced.

    Already-extracted archives (marker present) are skipped. A corrupt archive or a malicious member is a
    DataError naming the archive and the member; then nothing is written into ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    marker = marker_path(archive, dest)
    if marker.is_file():
        return [dest / line for line in marker.read_text().splitlines() if line]
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=dest))
    try:
        try:
            with zipfile.ZipFile(archive) as zf, disk_full_names(f"{dest} (extracting {archive.name})"):
                members = zf.infolist()
                for info in members:
                    _check_member(archive, info, tmp)
                need, free = sum(i.file_size for i in members), shutil.disk_usage(tmp).free
                if need > free:  # refused before writing (also a zip bomb: tiny archive, huge members)
                    raise DataError(
                        f"{dest}: no space left on device to extract {archive.name} "
                        f"({need / 1e9:.2f} GB of members, {free / 1e9:.2f} GB free)"
                    )
                zf.extractall(tmp)  # zipfile checks each member's CRC while reading it
        except zipfile.BadZipFile as exc:
            raise DataError(f"{archive}: not a valid zip archive ({exc})") from None
        top = sorted({PurePosixPath(i.filename).parts[0] for i in members if i.filename.strip("/")})
        for name in top:
            target = dest / name
            if target.is_dir() and (tmp / name).is_dir():
                _merge_dir(tmp / name, target)  # e.g. two VQA zips sharing a folder
            else:
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(tmp / name, target)
        marker.write_text("\n".join(top) + "\n")
        return [dest / name for name in top]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_dir(src: Path, dst: Path) -> None:
    for child in src.iterdir():
        target = dst / child.name
        if child.is_dir() and target.is_dir():
            _merge_dir(child, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(child, target)
