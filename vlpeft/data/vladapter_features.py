"""Import VL-Adapter's released CLIP features (per-image h5 files) into a vlpeft feature store.

The source layout, as read in ylsung/VL_adapter (commit 545fcbb):

- writer ``feature_extraction/coco_CLIP.py`` L134-181: for an image file ``<img_id>.<ext>`` it runs CLIP's
  ``encode_image``, whose first output is the layer-4 map ``(1, C, 7, 7)`` (``VL-T5/src/clip/model.py``
  L275-292), takes ``[0].permute(1, 2, 0)`` -> ``(7, 7, C)``, reshapes it to ``(49, C)`` and stores it in
  ``<dir>/<img_id>.h5`` as dataset ``features`` of a group named ``img_id``. So token ``t`` is grid cell
  ``(row t // 7, column t % 7)``: row-major. C = 2048 for RN50/RN101.
- readers ``VL-T5/src/{vqa,gqa,nlvr,caption}_clip_data.py``: ``h5py.File(dir / f"{img_id}.h5")``, then
  ``f[f"{img_id}/features"][...]`` -> ``(49, C)``; boxes are all zeros.
- the model (``VL-T5/src/modeling_bart.py`` ``Downsample``, L413-470, with ``--n_boxes 36 --downsample``):
  ``(B, 49, C).permute(0, 2, 1).reshape(B, C, 7, 7)`` (the inverse of the writer's reshape),
  ``AdaptiveMaxPool2d((6, 6))``, ``reshape(B, C, 36).permute(0, 2, 1)`` -> 36 tokens, row-major. NLVR2's two
  images are pooled separately, so pooling each image once here is the same.

Dtype: the script's model comes from ``clip.load(..., jit=False)`` on CUDA, whose ``build_model`` converts the
weights to fp16 (``VL-T5/src/clip/model.py`` L593), so a GPU run writes float16; the re-release (open PR
#22, ``tools/restore_datasets.py``) writes float16 explicitly. float32 files are accepted too.

The store gets one kind, ``tokens`` (36 pooled grid tokens, or all 49 with ``pool="none"``), keyed by the
project's integer image ids (see ``store_id`` and ``data_root_ids``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlpeft.data.features import DTYPES, FORMAT, INDEX, VERSION, _shard_name
from vlpeft.errors import ConfigError, DataError
from vlpeft.io import atomic_dir, check_writable, save_tensors

GRID = 7  # coco_CLIP.py --att_size default: 224 px / stride 32
POOLS: dict[str, tuple[int, int] | None] = {"max6x6": (6, 6), "none": None}
OUT_DTYPES = ("float16", "float32")  # as features.dtype allows
KIND = "tokens"
SOURCE = "vladapter-h5"
# coco_CLIP.py L39-45 and L92-93: what the images went through before the encoder.
PREPROCESSING = {
    "resize": [224, 224],
    "interpolation": "bicubic",
    "center_crop": [224, 224],
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
}
_COCO_NAME = re.compile(r"COCO_[a-z]+\d{4}_(\d+)")


# ------------------------------------------------------------------------------------------- pure parts


def feature_key(image_name: str) -> str:
    """The h5 dataset path VL-Adapter's readers open in ``<image_name>.h5``."""
    return f"{image_name}/features"


def pool_tokens(tokens: torch.Tensor, pool: str = "max6x6") -> torch.Tensor:
    """``(..., 49, C)`` grid tokens -> ``(..., 36, C)`` by 2-D adaptive max-pooling to 6x6 (``pool="max6x6"``,
    exactly ``nn.AdaptiveMaxPool2d((6, 6))`` on the ``(C, 7, 7)`` map, tokens row-major), or unchanged
    (``pool="none"``). Same dtype out as in: a max is exact in any dtype."""
    size = _pool_size(pool)
    if size is None:
        return tokens
    *lead, n, c = tokens.shape
    if n != GRID * GRID:
        raise ValueError(f"{n} tokens are not a {GRID}x{GRID} grid")
    # Channels-last and separable (a max over a window = the max over its rows of the max over its columns),
    # with AdaptiveMaxPool2d's windows: 30x faster on CPU than adaptive_max_pool2d on the transposed map.
    grid = tokens.reshape(*lead, GRID, GRID, c)
    grid = _adaptive_max(grid, -3, size[0])
    grid = _adaptive_max(grid, -2, size[1])
    return grid.reshape(*lead, size[0] * size[1], c)


def _adaptive_max(x: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    """Max over adaptive pooling's windows along ``dim``: output ``i`` covers
    ``[floor(i·n/n_out), ceil((i+1)·n/n_out))`` (torch's ``start_index`` / ``end_index``)."""
    n = x.shape[dim]
    parts = [
        x.narrow(dim, (i * n) // n_out, -(-(i + 1) * n // n_out) - (i * n) // n_out).amax(dim, keepdim=True)
        for i in range(n_out)
    ]
    return torch.cat(parts, dim)


def store_id(image_name: str) -> int | None:
    """The feature-store id an image name stands for without a table: a number is itself (GQA / Visual
    Genome, as the multi-task GQA loader reads them), a COCO file stem is its COCO id (= Karpathy ``cocoid``);
    anything else (NLVR2 names) needs an image table: None."""
    if image_name.isdigit():
        return int(image_name)
    match = _COCO_NAME.fullmatch(image_name)
    return int(match.group(1)) if match else None


def _pool_size(pool: str) -> tuple[int, int] | None:
    if pool not in POOLS:
        raise ConfigError(f"pool {pool!r}: expected one of {', '.join(POOLS)}")
    return POOLS[pool]


# --------------------------------------------------------------------------------------------- reading


MAX_CHANNELS = 16384  # CLIP RN101's grid has 2048; the widest encoders we know stay under 8192


def read_grid(path: str | Path) -> torch.Tensor:
    """The ``(49, C)`` grid of one VL-Adapter h5 file, as stored (float16/32/64). Any problem is a
    ``DataError`` naming the file: unreadable, no ``<stem>/features``, not floating point, wrong shape."""
    import h5py

    path = Path(path)
    key = feature_key(path.stem)
    try:
        with h5py.File(path, "r") as f:
            obj = f.get(key)
            if not isinstance(obj, h5py.Dataset):
                found = ", ".join(sorted(f.keys())[:3]) or "nothing"
                raise DataError(f"{path}: no dataset {key!r} (VL-Adapter's layout; the file holds {found})")
            if obj.dtype.kind != "f":
                raise DataError(f"{path}: dataset {key!r} has dtype {obj.dtype}, expected floating point")
            if obj.ndim != 2 or obj.shape[0] != GRID * GRID:
                raise DataError(f"{path}: dataset {key!r} has shape {obj.shape}, expected (49, C)")
            if obj.shape[1] > MAX_CHANNELS:  # read whole below: a huge declared shape would exhaust memory
                raise DataError(
                    f"{path}: dataset {key!r} has shape {obj.shape}, more than {MAX_CHANNELS} channels"
                )
            array = obj[...]
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:  # h5py's errors for damaged files
        reason = " ".join(str(exc).split())[:160]
        raise DataError(f"{path}: unreadable HDF5 file ({reason})") from None
    return torch.from_numpy(array)


def find_h5_files(h5_dirs: Sequence[str | Path]) -> dict[str, Path]:
    """Image name (file stem) -> h5 file over every directory; a name in two directories is a DataError."""
    if not h5_dirs:
        raise DataError("features import: no h5 directory given (--h5-dir DIR)")
    found: dict[str, Path] = {}
    for d in map(Path, h5_dirs):
        if not d.is_dir():
            raise DataError(f"{d}: h5 directory not found")
        files = sorted(d.glob("*.h5"))
        if not files:
            raise DataError(f"{d}: no .h5 files (expected VL-Adapter's <img_id>.h5 per image)")
        for p in files:
            if p.stem in found:
                raise DataError(
                    f"{p}: image {p.stem!r} is also in {found[p.stem]}; pass one of the directories"
                )
            found[p.stem] = p
    return found


def data_root_ids(root: str | Path) -> dict[str, int]:
    """Image name -> feature-store id of every image a prepared data root uses: Karpathy file stems (their
    ``cocoid``), ``gqa/images.json`` and ``nlvr/images.json`` names, and the images of the GQA question files
    (integers, as the multi-task GQA loader reads them). One name with two ids is a DataError; several names
    may share an id (the embedded world's tasks reuse its images)."""
    from vlpeft.data import gqa
    from vlpeft.data.images import EXTRA_IMAGE_TABLES, karpathy_images, read_image_table

    root = Path(root)
    ids: dict[str, int] = {}

    def add(name: str, image_id: int, where: Path) -> None:
        if ids.setdefault(name, image_id) != image_id:
            raise DataError(f"{where}: image {name!r} has id {image_id}, but {ids[name]} in another table")

    for entry in karpathy_images(root):
        add(Path(entry["filename"]).stem, entry["cocoid"], root / "dataset_coco.json")
    for table in EXTRA_IMAGE_TABLES:
        if (root / table).is_file():
            for name, entry in read_image_table(root / table).items():
                add(name, entry["id"], root / table)
    for split in gqa.SPLITS:
        path = gqa.gqa_path(root, split)
        if not path.is_file():
            continue
        for rec in gqa.load_gqa(root, split):
            if rec.img_id in ids:
                continue
            if not rec.img_id.isdigit():
                raise DataError(
                    f"{path}: image {rec.img_id!r} has no feature-store id (not an integer and not in "
                    "gqa/images.json)"
                )
            add(rec.img_id, int(rec.img_id), path)
    return ids


def plan_import(
    files: dict[str, Path], names: dict[str, int] | None = None
) -> tuple[list[tuple[int, Path]], int]:
    """``([(store id, h5 file)] sorted by id, number of files skipped)``.

    With ``names`` (``data_root_ids``): exactly those images; every id needs one file among its names, and
    the other files are skipped. Without: every file, its id from ``store_id``. Two files for one id (two
    different images would share a row) is a DataError naming both."""
    if names is None:
        names = {}
        for name, path in files.items():
            image_id = store_id(name)
            if image_id is None:
                raise DataError(
                    f"{path}: image {name!r} has no feature-store id (not a COCO file name or a number); "
                    "pass --data ROOT whose image tables list it (e.g. nlvr/images.json)"
                )
            names[name] = image_id
    by_id: dict[int, Path] = {}
    for name, image_id in sorted(names.items()):
        path = files.get(name)
        if path is None:
            continue
        if image_id in by_id:
            raise DataError(f"{path}: same feature-store id {image_id} as {by_id[image_id]}")
        by_id[image_id] = path
    missing = sorted(n for n, i in names.items() if i not in by_id)
    if missing:
        raise DataError(
            f"{len(missing)} image(s) of the data root have no h5 file in the h5 directories, "
            f"e.g. {missing[0]}.h5"
        )
    return sorted(by_id.items()), len(files) - len(by_id)


# --------------------------------------------------------------------------------------------- writing


def write_token_store(
    rows: Iterable[tuple[int, torch.Tensor]],
    out_dir: str | Path,
    *,
    width: int,
    num_tokens: int,
    dtype: str,
    shard_size: int,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Write ``rows`` = (image id, ``(num_tokens, width)`` tensor) as a one-kind (``tokens``) feature store,
    in the layout of ``vlpeft.data.features`` (same shards, index and marker), atomically; ``provenance`` may
    be filled while ``rows`` is consumed (it is written last). Returns the index without per-image rows."""
    torch_dtype = DTYPES[dtype]
    index: list[list[int]] = []
    shards: list[dict[str, Any]] = []
    with atomic_dir(out_dir) as tmp:
        feats: list[np.ndarray] = []
        ids: list[int] = []

        def flush() -> None:
            tensors = {
                KIND: torch.from_numpy(np.stack(feats)),  # numpy: a plain copy, 10x torch.stack here
                "image_ids": torch.tensor(ids, dtype=torch.long),
            }
            save_tensors(tensors, tmp / _shard_name(len(shards)), metadata={"format": FORMAT})
            index.extend([i, len(shards), row] for row, i in enumerate(ids))
            shards.append({"file": _shard_name(len(shards)), "rows": len(ids)})
            feats.clear()
            ids.clear()

        for image_id, tokens in rows:
            feats.append(tokens.to(torch_dtype).numpy())
            ids.append(int(image_id))
            if len(ids) == shard_size:
                flush()
        if ids:
            flush()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "kinds": [KIND],
            "dtype": dtype,
            "width": width,
            "num_tokens": {KIND: num_tokens},
            "n_images": len(index),
            "shards": shards,
            "provenance": provenance,
        }
        (tmp / INDEX).write_text(json.dumps({**meta, "index": index}, indent=1) + "\n")
    return meta


def import_vladapter_features(
    h5_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    pool: str = "max6x6",
    dtype: str = "float16",
    shard_size: int = 4096,
    encoder: str = "RN101",
    progress: bool = True,
) -> dict[str, Any]:
    """Read VL-Adapter's ``<img_id>.h5`` files from ``h5_dirs`` and write a feature store to ``out_dir``.

    ``data_root`` (a prepared data root): import exactly its images (``data_root_ids``), else every file.
    ``pool``: ``max6x6`` (36 tokens, as VL-Adapter trains) or ``none`` (the 49 grid tokens). ``dtype``: the
    stored dtype (float16 holds the released float16 values exactly). ``encoder`` is the store's encoder
    name; training refuses the store unless ``model.vision`` is the same (``RN101``). Every input problem is a ``DataError`` naming the file; nothing is written then.
    """
    size = _pool_size(pool)
    if dtype not in OUT_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {', '.join(OUT_DTYPES)}")
    if shard_size < 1:
        raise ConfigError(f"shard size {shard_size}: must be at least 1")
    check_writable(out_dir)
    files = find_h5_files(h5_dirs)
    plan, skipped = plan_import(files, data_root_ids(data_root) if data_root is not None else None)
    if not plan:
        raise DataError(f"{data_root}: lists no images")
    # The first file fixes the width, and a bad one fails before any output exists.
    width = int(read_grid(plan[0][1]).shape[1])
    num_tokens = size[0] * size[1] if size else GRID * GRID
    source_dtypes: set[str] = set()
    provenance: dict[str, Any] = {
        "source": SOURCE,
        "encoder": encoder,
        "extractor": "ylsung/VL_adapter feature_extraction/coco_CLIP.py (CLIP layer-4 grid, 7x7)",
        "weights_sha256": None,  # the extraction weights are not available to hash
        "preprocessing": PREPROCESSING,
        "grid": [GRID, GRID],
        **({"grid_pool": list(size)} if size else {}),
        "dtype": dtype,
        "kinds": [KIND],
        "width": width,
        "h5_dirs": [str(d) for d in h5_dirs],
        "data_root": None if data_root is None else str(data_root),
        "source_dtypes": [],
        "skipped_files": skipped,
    }

    def rows() -> Iterable[tuple[int, torch.Tensor]]:
        from tqdm.auto import tqdm

        for image_id, path in tqdm(plan, desc="import features", unit="img", mininterval=1.0,
                                   disable=not progress or None):  # fmt: skip
            grid = read_grid(path)
            if grid.shape[1] != width:
                raise DataError(f"{path}: feature width {grid.shape[1]}, but {plan[0][1]} has {width}")
            source_dtypes.add(str(grid.dtype).removeprefix("torch."))
            tokens = pool_tokens(grid, pool).to(DTYPES[dtype])
            # numpy: torch's isfinite on a small CPU tensor costs more than reading the file.
            if not np.isfinite(tokens.numpy()).all():
                raise DataError(
                    f"{path}: non-finite values in {feature_key(path.stem)!r} after conversion to {dtype}"
                )
            yield image_id, tokens
        provenance["source_dtypes"] = sorted(source_dtypes)

    return write_token_store(
        rows(), out_dir, width=width, num_tokens=num_tokens, dtype=dtype, shard_size=shard_size,
        provenance=provenance,
    )  # fmt: skip
