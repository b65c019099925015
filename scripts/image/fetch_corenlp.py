"""Fetch Stanford CoreNLP 3.6.0 for SPICE at image build time, check its SHA-256, keep only the two jars.

    python3 fetch_corenlp.py URL SHA256 OUT_DIR

URL is Stanford's ``stanford-corenlp-full-2015-12-09.zip`` (or a mirror of it); the member names are those
pycocoevalcap's ``spice/get_stanford_models.py`` extracts, and the file names are those the manifest of
``spice-1.0.jar`` puts on its class path. With an empty SHA256 nothing is installed: the script prints the
sum of what it downloaded and exits 1, so an unverified download can never end up in an image.
Standard library only: the slim base image has no curl.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

TOP = "stanford-corenlp-full-2015-12-09"
JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CHUNK = 1 << 20


def download(url: str, dest: Path) -> str:
    """Stream ``url`` into ``dest``; return the SHA-256 hex digest of the bytes written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=300) as response, dest.open("wb") as out:
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def extract_jars(archive: Path, out_dir: Path) -> None:
    """Copy the two jars out of the CoreNLP zip into ``out_dir`` (temp name, then rename)."""
    with zipfile.ZipFile(archive) as zf:
        for jar in JARS:
            tmp = out_dir / f".{jar}.part"
            with zf.open(f"{TOP}/{jar}") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            tmp.rename(out_dir / jar)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    url, want, out_dir = argv[0], argv[1].strip().lower(), Path(argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "corenlp.zip"
        got = download(url, archive)
        size = archive.stat().st_size
        if not want:
            print(
                f"fetch_corenlp: {url}: {size} bytes, sha256 {got}; no CORENLP_SHA256 given, so nothing "
                "is installed: verify this sum, then build with --build-arg CORENLP_SHA256=<sum> "
                "(or --build-arg WITH_SPICE=0 for an image without SPICE)",
                file=sys.stderr,
            )
            return 1
        if got != want:
            print(f"fetch_corenlp: {url}: sha256 {got} != CORENLP_SHA256 {want}", file=sys.stderr)
            return 1
        out_dir.mkdir(parents=True, exist_ok=True)
        extract_jars(archive, out_dir)
    print(f"fetch_corenlp: {url}: {size} bytes, sha256 {got} (pinned): {', '.join(JARS)} -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
