"""A self-contained copy of a trained model for the registry: the model dir plus the backbones it names.

``save_vl_model`` directories reference their backbones by path (``vlpeft_model.json`` → ``backbones``). A
registered model must load anywhere, so ``package_model`` copies the backbones in and rewrites those
references to package-relative names; ``localize_package`` turns them back into absolute paths wherever the
package was downloaded to. Only files are copied: no pickle anywhere (weights are safetensors).

Package layout::

    package.json                {"format": "vlpeft-package", "task", "model_dir": "model", "backbones": {...}}
    model/                      the save_vl_model dir (without a resumable checkpoint's ``trainer/``)
    backbones/<role>/           each backbone directory the model referenced (``language``, ``vision``)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError

PACKAGE_FILE = "package.json"
PACKAGE_FORMAT = "vlpeft-package"
MODEL_FILE = "vlpeft_model.json"  # vlpeft.models.persistence.MODEL_FILE
PREFIX = "@package/"
SKIP = shutil.ignore_patterns("trainer", "__pycache__", ".*.prev", ".*.tmp*")


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """The ``vlpeft_model.json`` of a ``save_vl_model`` dir (``DataError`` naming the file if absent/bad)."""
    from vlpeft.io import read_json

    path = Path(model_dir) / MODEL_FILE
    meta = read_json(path, "vlpeft model description (is this a save_vl_model directory?)")
    if not isinstance(meta, dict) or "task" not in meta:
        raise DataError(f"{path}: not a vlpeft model description (no 'task')")
    return meta


def _backbone_dir(ref: dict[str, Any]) -> Path | None:
    """The local directory a backbone reference points at (configured path first, then resolved)."""
    for key in ("path", "resolved"):
        value = ref.get(key)
        if value and Path(value).is_dir():
            return Path(value)
    return None


def _looks_local(ref: dict[str, Any]) -> bool:
    path = str(ref.get("path") or "")
    return bool(ref.get("resolved")) or path.startswith(("/", ".", "~")) or Path(path).suffix != ""


def package_model(model_dir: str | Path, dest: str | Path) -> Path:
    """Copy ``model_dir`` and every local backbone it references into ``dest`` (see module docstring).

    Backbones that are not local directories (hub ids) stay as references. Returns ``dest``.
    """
    model_dir, dest = Path(model_dir), Path(dest)
    meta = read_meta(model_dir)
    if dest.exists():
        raise DataError(f"{dest}: package destination already exists")
    shutil.copytree(model_dir, dest / "model", ignore=SKIP)
    copied: dict[str, str] = {}
    by_source: dict[Path, str] = {}
    for role, ref in (meta.get("backbones") or {}).items():
        if not isinstance(ref, dict):
            continue
        src = _backbone_dir(ref)
        if src is None:
            if _looks_local(ref):  # a path that is gone: registering would store a model that cannot load
                raise DataError(f"{model_dir / MODEL_FILE}: {role} backbone {ref.get('path')!r} not found")
            continue  # a hub id: stays a reference
        key = src.resolve()
        if key not in by_source:  # two roles on one directory: copy it once
            target = f"backbones/{role}"
            shutil.copytree(src, dest / target, ignore=SKIP)
            by_source[key] = target
        copied[role] = by_source[key]
        # Package-relative: ``localize_package`` makes this absolute wherever the package lands. The model
        # config names the same backbones (model.vision, model.vqa_backbone, ...): rewrite those too.
        ref_here = f"{PREFIX}{by_source[key]}"
        originals = {str(ref.get("path")), str(ref.get("resolved"))}
        for field, value in (meta.get("model") or {}).items():
            if isinstance(value, str) and value in originals:
                meta["model"][field] = ref_here
        meta["backbones"][role] = {"path": ref_here, "resolved": None, "source": str(src)}
    (dest / "model" / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    info = {"format": PACKAGE_FORMAT, "task": meta["task"], "model_dir": "model", "backbones": copied}
    (dest / PACKAGE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return dest


def content_hash(package_dir: str | Path) -> str:
    """sha256 over every file of a package (relative path and bytes, sorted): the identity of a checkpoint.

    The backbones' original locations (``source`` in the model description) are left out: the same weights
    packaged from another checkout or pod are the same model.
    """
    import hashlib

    package_dir = Path(package_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in package_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(package_dir).as_posix()
        data = path.read_bytes()
        if path.name == MODEL_FILE:
            meta = json.loads(data)
            for ref in (meta.get("backbones") or {}).values():
                if isinstance(ref, dict):
                    ref.pop("source", None)
            data = json.dumps(meta, sort_keys=True).encode()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def find_package(root: str | Path) -> Path:
    """The model package inside a downloaded model version: ``data/<name>`` (registered with
    ``loader_module``) or ``artifacts/model`` (versions logged as models from code). Read as data only."""
    root = Path(root)
    candidates = sorted(root.glob(f"data/*/{PACKAGE_FILE}")) + sorted(
        root.glob(f"artifacts/*/{PACKAGE_FILE}")
    )
    if (root / PACKAGE_FILE).is_file():
        candidates.insert(0, root / PACKAGE_FILE)
    if not candidates:
        raise DataError(f"{root}: no vlpeft model package ({PACKAGE_FILE}) in this model")
    return candidates[0].parent


def localize_package(package_dir: str | Path, workdir: str | Path | None = None) -> Path:
    """A loadable model dir for a (downloaded) package: backbone references made absolute.

    The package itself is left untouched; the small model dir is copied into ``workdir`` (a new temp dir when
    None) and its ``vlpeft_model.json`` rewritten there. Backbones are used in place.
    """
    package_dir = Path(package_dir).resolve()
    info_path = package_dir / PACKAGE_FILE
    if not info_path.is_file():
        raise DataError(f"{info_path}: not a vlpeft model package")
    info = json.loads(info_path.read_text())
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vlpeft-model-"))
    local = work / "model"
    shutil.copytree(package_dir / info["model_dir"], local)
    meta = json.loads((local / MODEL_FILE).read_text())
    for ref in (meta.get("backbones") or {}).values():
        if isinstance(ref, dict) and str(ref.get("path", "")).startswith(PREFIX):
            ref["path"] = ref["resolved"] = str(package_dir / ref["path"][len(PREFIX) :])
    for field, value in (meta.get("model") or {}).items():
        if isinstance(value, str) and value.startswith(PREFIX):
            meta["model"][field] = str(package_dir / value[len(PREFIX) :])
    (local / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return local
