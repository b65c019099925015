"""The visual feature store: a frozen vision encoder run once over every image, kept in safetensors shards.

Layout of a store directory (written whole, atomically, by ``extract_features`` / ``vlpeft features``)::

    index.json              {"format": "vlpeft-features", "version": 1, "kinds": [...], "dtype", "width",
                             "num_tokens": {kind: m}, "n_images", "shards": [{"file", "rows"}],
                             "index": [[image_id, shard, row], ...], "provenance": {...}}
    shard-00000.safetensors tensors "image_ids" (n,) int64 and one (n, m, d) tensor per kind
                            ("pooled": m = 1; "tokens": m = CLS + patches)

``provenance`` names the encoder, the SHA-256 of its weights, its pooling and preprocessing, the stored dtype,
the kinds and the feature width, so a consumer can refuse a store made by another encoder.
``FeatureStore(dir).get(image_ids, kind)`` returns float32 ``(B, m, d)`` whatever the stored dtype.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from vlpeft.data.images import load_image
from vlpeft.errors import DataError
from vlpeft.io import atomic_dir, read_json, require_complete, save_tensors
from vlpeft.models.vision import VisionEncoder, pool_grid

FORMAT, VERSION = "vlpeft-features", 1
INDEX = "index.json"
KINDS: tuple[str, ...] = ("pooled", "tokens")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
IN_MEMORY_LIMIT = 2 * 2**30  # bytes per kind; larger stores are read row by row from memory-mapped shards


def expand_kind(kind: Literal["pooled", "tokens", "both"]) -> tuple[str, ...]:
    """``both`` -> ``("pooled", "tokens")``; a single kind -> itself."""
    if kind == "both":
        return KINDS
    if kind not in KINDS:
        raise DataError(f"feature kind {kind!r}: expected pooled, tokens or both")
    return (kind,)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def extract_features(
    encoder: VisionEncoder,
    items: Sequence[tuple[int, Path]],
    out_dir: str | Path,
    kind: Literal["pooled", "tokens", "both"] = "pooled",
    dtype: str = "float32",
    batch_size: int = 256,
    shard_size: int = 4096,
    extra_provenance: dict[str, Any] | None = None,
    grid_pool: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Run ``encoder`` (frozen, eval) over ``items`` = (image id, path) and write a store to ``out_dir``.

    ``grid_pool`` (e.g. ``(6, 6)``): the ``tokens`` kind stores the patch grid max-pooled to that size (CLS
    dropped; VL-Adapter's 36 CLIP grid features) instead of every token.

    The whole directory appears at once (temp dir + rename) or not at all. Returns the index without the
    per-image rows.
    """
    kinds = expand_kind(kind)
    if dtype not in DTYPES:
        raise DataError(f"feature dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if not items:
        raise DataError("feature extraction: no images to encode")
    ids = [int(i) for i, _ in items]
    dup = next((i for i, n in Counter(ids).items() if n > 1), None)
    if dup is not None:
        raise DataError(f"feature extraction: image id {dup} appears more than once")
    torch_dtype = DTYPES[dtype]
    encoder.eval()
    provenance = {
        "encoder": encoder.name,
        "model_type": encoder.model.config.model_type,
        "weights_sha256": encoder.weights_hash(),
        "pooling": encoder.pooling,
        "preprocessing": encoder.preprocessing_config(),
        "dtype": dtype,
        "kinds": list(kinds),
        "width": encoder.width,
        **({"grid_pool": list(grid_pool)} if grid_pool is not None else {}),
        **(extra_provenance or {}),
    }
    index: list[list[int]] = []
    shards: list[dict[str, Any]] = []
    num_tokens: dict[str, int] = {}
    with atomic_dir(out_dir) as tmp:
        buffer: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
        buffer_ids: list[int] = []

        def flush() -> None:
            tensors = {k: torch.cat(buffer[k]).contiguous() for k in kinds}
            tensors["image_ids"] = torch.tensor(buffer_ids, dtype=torch.long)
            save_tensors(tensors, tmp / _shard_name(len(shards)), metadata={"format": FORMAT})
            index.extend([i, len(shards), row] for row, i in enumerate(buffer_ids))
            shards.append({"file": _shard_name(len(shards)), "rows": len(buffer_ids)})
            for k in kinds:
                buffer[k].clear()
            buffer_ids.clear()

        bar = tqdm(total=len(items), desc="features", unit="img", mininterval=1.0)
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            pixels = encoder.preprocess([load_image(Path(p)) for _, p in batch])
            with torch.inference_mode():
                feats = {k: encoder(pixels, kind=k) for k in kinds}
                if grid_pool is not None and "tokens" in feats:
                    feats["tokens"] = pool_grid(feats["tokens"], tuple(grid_pool), encoder.family.prefix_tokens)
                feats = {k: v.to("cpu", torch_dtype) for k, v in feats.items()}
            for k in kinds:
                num_tokens[k] = feats[k].shape[1]
            # Split the batch at shard boundaries so every shard holds exactly shard_size rows.
            offset = 0
            while offset < len(batch):
                take = min(len(batch) - offset, shard_size - len(buffer_ids))
                for k in kinds:
                    buffer[k].append(feats[k][offset : offset + take])
                buffer_ids.extend(int(i) for i, _ in batch[offset : offset + take])
                offset += take
                if len(buffer_ids) == shard_size:
                    flush()
            bar.update(len(batch))
        bar.close()
        if buffer_ids:
            flush()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "kinds": list(kinds),
            "dtype": dtype,
            "width": encoder.width,
            "num_tokens": num_tokens,
            "n_images": len(ids),
            "shards": shards,
            "provenance": provenance,
        }
        (tmp / INDEX).write_text(json.dumps({**meta, "index": index}, indent=1) + "\n")
    return meta


class FeatureStore:
    """Read access to a feature store directory (see the module docstring for the layout)."""

    def __init__(self, directory: str | Path, in_memory: bool | None = None) -> None:
        """Open the store; ``in_memory=None`` loads a kind whole when it is at most 2 GiB, else reads rows."""
        self.dir = Path(directory)
        require_complete(self.dir, "feature store", "run `vlpeft features`")
        if not (self.dir / INDEX).is_file():
            raise DataError(f"{self.dir}: not a feature store ({INDEX} missing; run `vlpeft features`)")
        meta = read_json(self.dir / INDEX, "feature store index")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{self.dir / INDEX}: not a vlpeft feature store index (format != {FORMAT!r})")
        if meta.get("version") != VERSION:
            raise DataError(f"{self.dir / INDEX}: store version {meta.get('version')!r}, expected {VERSION}")
        try:
            self.kinds: tuple[str, ...] = tuple(meta["kinds"])
            self.dtype: str = meta["dtype"]
            self.width: int = int(meta["width"])
            self._num_tokens: dict[str, int] = {k: int(v) for k, v in meta["num_tokens"].items()}
            self._shards: list[dict[str, Any]] = meta["shards"]
            self.provenance: dict[str, Any] = meta["provenance"]
            rows = meta["index"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{self.dir / INDEX}: malformed index (field {exc})") from None
        for shard in self._shards:
            if not (self.dir / shard["file"]).is_file():
                raise DataError(f"{self.dir / shard['file']}: feature shard missing")
        offsets = [0]
        for shard in self._shards:
            offsets.append(offsets[-1] + int(shard["rows"]))
        self._offsets = offsets
        self._where: dict[int, tuple[int, int]] = {int(i): (int(s), int(r)) for i, s, r in rows}
        for i, (s, r) in self._where.items():
            if not (0 <= s < len(self._shards) and 0 <= r < int(self._shards[s]["rows"])):
                raise DataError(f"{self.dir / INDEX}: image {i} points at shard {s} row {r}, which does not exist")
        self.image_ids: list[int] = [int(i) for i, _, _ in rows]
        self._in_memory = in_memory
        self._cache: dict[str, torch.Tensor] = {}
        self._handles: dict[int, Any] = {}
        self._ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._where

    def num_tokens(self, kind: str = "pooled") -> int:
        """``m`` of a stored kind."""
        self._check_kind(kind)
        return self._num_tokens[kind]

    def require(
        self, kind: str | None = None, width: int | None = None, weights_sha256: str | None = None
    ) -> None:
        """``DataError`` unless the store holds ``kind``, has ``width`` and was made by those weights."""
        if kind is not None:
            self._check_kind(kind)
        if width is not None and width != self.width:
            raise DataError(f"{self.dir}: feature width {self.width}, but the model expects {width}")
        stored = self.provenance.get("weights_sha256")
        if weights_sha256 is not None and weights_sha256 != stored:
            raise DataError(
                f"{self.dir}: features were made by encoder weights {str(stored)[:12]}…, "
                f"not {weights_sha256[:12]}… "
                "(re-run `vlpeft features`)"
            )

    def get(self, image_ids: Iterable[int], kind: str = "pooled") -> torch.Tensor:
        """Features of ``image_ids`` in order, float32 ``(B, m, d)``; an unknown id is a ``DataError``."""
        self._check_kind(kind)
        ids = [int(i) for i in image_ids]
        where = []
        for i in ids:
            if i not in self._where:
                raise DataError(f"{self.dir}: image id {i} is not in the feature store ({len(self)} images)")
            where.append(self._where[i])
        m = self._num_tokens[kind]
        if not where:
            return torch.empty(0, m, self.width)
        rows = torch.tensor([self._offsets[s] + r for s, r in where], dtype=torch.long)
        self._verify(ids, rows)
        if self._use_memory(kind):
            return self._load_kind(kind)[rows].float()
        out = torch.empty(len(where), m, self.width)
        for j, (s, r) in enumerate(where):
            out[j] = self._read(s, lambda h, r=r: h.get_slice(kind)[r : r + 1][0]).float()
        return out

    def verify(self, image_ids: Iterable[int] = ()) -> None:
        """Check, before any training, what lookups would otherwise find late: every shard opens, its header
        declares the rows, tokens and width the index says for each stored kind, its stored image ids match
        the index, and every id of ``image_ids`` is in the store. A ``DataError`` names the culprit."""
        for s, shard in enumerate(self._shards):
            path = self.dir / shard["file"]
            for kind in self.kinds:
                want = [int(shard["rows"]), self._num_tokens[kind], self.width]
                have = self._read(s, lambda h, kind=kind: h.get_slice(kind).get_shape())
                if list(have) != want:
                    raise DataError(f"{path}: {kind} features have shape {list(have)}, {INDEX} says {want}")
        ids = list(self._where)
        self._verify(ids, torch.tensor([self._offsets[s] + r for s, r in self._where.values()], dtype=torch.long))
        missing = [i for i in image_ids if int(i) not in self._where]
        if missing:
            raise DataError(
                f"{self.dir}: image id {missing[0]} is not in the feature store ({len(missing)} missing; "
                "re-run `vlpeft features` on this data)"
            )

    # ------------------------------------------------------------------------------------------ internals

    def _check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise DataError(
                f"{self.dir}: store holds {', '.join(self.kinds)} features, not {kind!r} "
                f"(re-run `vlpeft features` with features.kind={kind} or both)"
            )

    def _use_memory(self, kind: str) -> bool:
        if self._in_memory is not None:
            return self._in_memory
        itemsize = torch.empty(0, dtype=DTYPES.get(self.dtype, torch.float32)).element_size()
        return len(self) * self._num_tokens[kind] * self.width * itemsize <= IN_MEMORY_LIMIT

    def _load_kind(self, kind: str) -> torch.Tensor:
        if kind not in self._cache:
            parts = [self._read(s, lambda h: h.get_tensor(kind)) for s in range(len(self._shards))]
            self._cache[kind] = torch.cat(parts)
        return self._cache[kind]

    def _verify(self, ids: list[int], rows: torch.Tensor) -> None:
        """Every row read must hold the image asked for: each shard stores its rows' image ids, so an index
        whose rows were swapped or edited (or a shard from another store) is refused, never silently misread.
        One vectorised comparison per lookup: cheap next to reading the features."""
        stored = self._stored_ids()[rows]
        bad = (stored != torch.tensor(ids)).nonzero()
        if len(bad):
            j = int(bad[0])
            s = int(torch.searchsorted(torch.tensor(self._offsets), rows[j], right=True)) - 1
            raise DataError(
                f"{self.dir / self._shards[s]['file']}: row {int(rows[j]) - self._offsets[s]} holds image "
                f"{int(stored[j])}, but {INDEX} says image {ids[j]}: the index and its shards do not match "
                "(re-run `vlpeft features`)"
            )

    def _stored_ids(self) -> torch.Tensor:
        """The image id stored with every row, all shards concatenated (read once; 8 bytes per image)."""
        if self._ids is None:
            parts = []
            for s, shard in enumerate(self._shards):
                ids = self._read(s, lambda h: h.get_tensor("image_ids"))
                if len(ids) != int(shard["rows"]):
                    path = self.dir / shard["file"]
                    raise DataError(f"{path}: {len(ids)} rows, but {INDEX} says {shard['rows']}")
                parts.append(ids)
            self._ids = torch.cat(parts)
        return self._ids

    def _read(self, shard: int, get: Any) -> torch.Tensor:
        """``get(handle)`` on a shard; a truncated or corrupt shard is a ``DataError`` naming it."""
        try:
            return get(self._handle(shard))
        except DataError:
            raise
        except Exception as exc:  # safetensors raises its own SafetensorError, or OSError/ValueError
            path = self.dir / self._shards[shard]["file"]
            reason = " ".join(str(exc).split())[:160]
            raise DataError(f"{path}: unreadable feature shard ({reason}); re-run `vlpeft features`") from None

    def _handle(self, shard: int) -> Any:
        # Opened lazily (and per process: DataLoader workers fork after construction).
        if shard not in self._handles:
            path = self.dir / self._shards[shard]["file"]
            handle = safe_open(str(path), framework="pt")
            if not {*self.kinds, "image_ids"} <= set(handle.keys()):
                raise DataError(f"{path}: shard lacks {', '.join(self.kinds)} features listed in {INDEX}")
            self._handles[shard] = handle
        return self._handles[shard]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles do not cross process boundaries
        return state
