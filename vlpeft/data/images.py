"""The image table of a data root (from its Karpathy ``dataset_coco.json``) and checked image opening."""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from vlpeft.data.formats import SPLITS, karpathy_path
from vlpeft.errors import DataError
from vlpeft.io import read_json, require_complete

EXTRA_IMAGE_TABLES = ("gqa/images.json", "nlvr/images.json")  # {name: {"id", "file"}} of other tasks
_KARPATHY_FIELDS = ("filepath", "filename", "cocoid", "split", "sentences")


def require(record: Any, key: str, where: str) -> Any:
    """``record[key]``, or a DataError ``"<where>: missing field '<key>'"``."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing field {key!r}")
    return record[key]


def require_list(data: Any, key: str, path: Path) -> list[Any]:
    """Top-level list ``data[key]`` of a JSON file, with errors naming the file."""
    value = require(data, key, str(path))
    if not isinstance(value, list):
        raise DataError(f"{path}: field {key!r} must be a list, got {type(value).__name__}")
    return value


@functools.lru_cache(maxsize=2)  # the real COCO file is large: keep few copies
def _karpathy_cached(path: str, _mtime_ns: int, _size: int) -> tuple[dict[str, Any], ...]:
    """Parsed and validated Karpathy images; keyed on mtime and size so an edited file is re-read."""
    p = Path(path)
    images = require_list(read_json(p, "Karpathy split file"), "images", p)
    for i, im in enumerate(images):
        where = f"{p}: image {i}" + (
            f" (cocoid {im['cocoid']})" if isinstance(im, dict) and "cocoid" in im else ""
        )
        for key in _KARPATHY_FIELDS:
            require(im, key, where)
        if not isinstance(im["cocoid"], int):
            raise DataError(f"{where}: cocoid must be an integer, got {im['cocoid']!r}")
        if im["split"] not in SPLITS:
            raise DataError(f"{where}: split {im['split']!r} is not one of {', '.join(SPLITS)}")
    return tuple(images)


def karpathy_images(root: str | Path) -> tuple[dict[str, Any], ...]:
    """The validated ``images`` of ``<root>/dataset_coco.json`` (cached while the file is unchanged)."""
    require_complete(root, "data directory", "run `vlpeft data synth` or `vlpeft data prepare`")
    path = karpathy_path(Path(root))
    if not path.is_file():
        raise DataError(
            f"{path}: Karpathy split file not found (run `vlpeft data synth` or `vlpeft data prepare`)"
        )
    st = path.stat()
    return _karpathy_cached(str(path), st.st_mtime_ns, st.st_size)


def image_path(root: str | Path, entry: dict[str, Any]) -> Path:
    """``<root>/images/<filepath>/<filename>`` of one Karpathy entry."""
    return Path(root) / "images" / entry["filepath"] / entry["filename"]


def split_images(root: str | Path, split: str, check_files: bool = True) -> dict[int, Path]:
    """Image id -> path for one split; an unknown or empty split, or a missing image file, is a DataError."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    out: dict[int, Path] = {}
    for entry in karpathy_images(root):
        if entry["split"] == split:
            path = image_path(root, entry)
            if check_files and not path.is_file():
                raise DataError(
                    f"{karpathy_path(Path(root))}: image cocoid {entry['cocoid']}: file {path} not found"
                )
            out[entry["cocoid"]] = path
    if not out:
        raise DataError(f"{karpathy_path(Path(root))}: split {split!r} has no images")
    return out


def read_image_table(path: Path) -> dict[str, dict[str, Any]]:
    """A task's image table ``{name: {"id": feature-store id, "file": path under the root}}``, checked."""
    data = read_json(path, "image table")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of image names")
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or "file" not in entry:
            raise DataError(f"{path}: image {key!r}: expected {{'id': int, 'file': path}}")
    return data


def image_table(root: str | Path) -> list[tuple[int, Path]]:
    """Every image id of every split with its path (train, val, test order), e.g. for feature extraction."""
    table: list[tuple[int, Path]] = []
    entries = karpathy_images(root)
    for split in SPLITS:
        table.extend((e["cocoid"], image_path(root, e)) for e in entries if e["split"] == split)
    # Images of other tasks (GQA / NLVR2 image tables) that the Karpathy file does not list.
    known = {i for i, _ in table}
    for name in EXTRA_IMAGE_TABLES:
        path = Path(root) / name
        if path.is_file():
            for entry in read_image_table(path).values():
                if entry["id"] not in known:
                    known.add(entry["id"])
                    table.append((entry["id"], Path(root) / entry["file"]))
    return table


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB; a missing or unreadable file is a DataError naming it."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that (then decodes gigabytes): refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        pixels = next(iter(re.findall(r"\d+ pixels", str(exc))), "too many pixels")
        raise DataError(f"{path}: image too large to decode ({pixels}; a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
