"""``vlpeft data download``: resumable, verified downloads of the real datasets listed in a registry file.

A file is streamed into ``<name>.part``; a broken transfer keeps the part file and the next attempt (or the
next run) asks the server for the rest with an HTTP ``Range`` request. Only a complete file whose size and
checksums match the registry is renamed to its final name, so a final name always means "verified".
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vlpeft.data.archive import safe_extract
from vlpeft.errors import DataError

DEFAULT_REGISTRY = Path(__file__).with_name("registry.json")
GROUPS = ("coco-images", "karpathy", "vqa", "gqa", "nlvr")
_CHUNK = 1 << 20
_USER_AGENT = "vlpeft-data-download/1"


@dataclass(frozen=True)
class RegistryEntry:
    """One downloadable file."""

    name: str
    group: str
    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract_to: str | None = None


def load_registry(path: str | Path | None = None) -> dict[str, RegistryEntry]:
    """Read a registry JSON (``{"files": {name: {group, url, filename, size, sha256, md5, extract_to}}}``)."""
    path = Path(path) if path is not None else DEFAULT_REGISTRY
    if not path.is_file():
        raise DataError(f"{path}: registry file not found")
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a registry file ({type(exc).__name__}: {exc})") from None
    entries = {}
    fields = set(RegistryEntry.__dataclass_fields__) - {"name"}
    for name, raw in files.items():
        for key in ("group", "url", "filename"):
            if not isinstance(raw, dict) or not raw.get(key):
                raise DataError(f"{path}: entry {name!r}: missing field {key!r}")
        entries[name] = RegistryEntry(name=name, **{k: v for k, v in raw.items() if k in fields})
    return entries


def select(entries: dict[str, RegistryEntry], what: str) -> list[RegistryEntry]:
    """Entries of a group (``coco-images``, ``karpathy``, ``vqa``), one entry by name, or ``all``."""
    if what == "all":
        return list(entries.values())
    chosen = [e for e in entries.values() if e.group == what or e.name == what]
    if not chosen:
        names = sorted({e.group for e in entries.values()} | set(entries))
        raise DataError(f"--what {what!r}: unknown (choose all, {', '.join(names)})")
    return chosen


def file_digests(path: Path) -> dict[str, str]:
    """sha256 and md5 of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def verify(path: Path, size: int | None, sha256: str | None, md5: str | None, label: str) -> dict[str, str]:
    """Check size and checksums (those that are known); DataError on the first mismatch."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DataError(f"{label}: size mismatch (expected {size} bytes, got {actual})")
    digests = file_digests(path)
    for kind, expected in (("sha256", sha256), ("md5", md5)):
        if expected and digests[kind] != expected.lower():
            raise DataError(f"{label}: {kind} mismatch (expected {expected}, got {digests[kind]})")
    return digests


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One attempt: append the missing bytes of ``url`` to ``part`` (Range request when part exists)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part file is already complete
            return
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    with resp:
        if offset and resp.status == 206:
            start = resp.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
            if start != str(offset):
                raise DataError(f"{url}: server resumed at byte {start!r}, expected {offset}")
            mode = "ab"
        else:  # 200: the server ignored the Range header, so start again
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=not progress or None,
            ) as bar,
        ):
            got = 0
            while block := resp.read(_CHUNK):
                fh.write(block)
                got += len(block)
                bar.update(len(block))
        if length is not None and got != int(length):
            raise http.client.IncompleteRead(b"", int(length) - got)


def fetch(
    url: str,
    dest: str | Path,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, and rename it into place.

    A broken transfer is retried ``retries`` times from where it stopped; after that a DataError says the
    partial file is kept and a new run resumes it. A size or checksum mismatch deletes the part file (its
    bytes cannot be trusted) and raises a DataError naming the file, the expected and the actual value.
    """
    dest = Path(dest)
    label = str(dest)
    if dest.is_file():  # only verified files get their final name; re-check the cheap part only
        if size is not None and dest.stat().st_size != size:
            raise DataError(
                f"{label}: size {dest.stat().st_size} != expected {size}; delete it to download again"
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()  # longer than the real file: cannot be a prefix of it
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise DataError(
                    f"{url}: download interrupted ({type(exc).__name__}: {exc}); {have} bytes kept in "
                    f"{part}, run the command again to resume"
                ) from None
            log(f"{url}: transfer broken at {have} bytes ({type(exc).__name__}); resuming")
            time.sleep(min(2.0**attempt, 10.0) * 0.1)
    try:
        digests = verify(part, size, sha256, md5, f"{label} from {url}")
    except DataError as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"{exc}; the downloaded file was deleted") from None
    if not sha256:
        log(f"{dest.name}: no sha256 in the registry; computed {digests['sha256']} (pin it for future runs)")
    os.replace(part, dest)
    return dest


def download_group(
    entries: dict[str, RegistryEntry],
    what: str,
    out: str | Path,
    extract: bool = True,
    retries: int = 3,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Fetch, verify and (optionally) extract every entry of ``what`` into ``out``; return the ready paths."""
    out = Path(out)
    ready: list[Path] = []
    for entry in select(entries, what):
        path = fetch(
            entry.url,
            out / "downloads" / entry.filename,
            size=entry.size,
            sha256=entry.sha256,
            md5=entry.md5,
            retries=retries,
            progress=progress,
            log=log,
        )
        if extract and entry.extract_to:
            ready.extend(safe_extract(path, out / entry.extract_to))
        else:
            ready.append(path)
    return ready
