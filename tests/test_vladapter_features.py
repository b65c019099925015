"""The importer of VL-Adapter's released CLIP features (vlpeft/data/vladapter_features.py, `features-import`).

Tiny h5 files are written in the released layout, read in ylsung/VL_adapter: ``coco_CLIP.py`` L153 and
L176-181 store ``map[0].permute(1, 2, 0).reshape(49, -1)`` of the ``(1, C, 7, 7)`` layer-4 map as dataset
``features`` of a group named after the file (``<img_id>.h5``); the readers open ``f[f"{img_id}/features"]``;
``modeling_bart.py`` ``Downsample`` (L413-470) reshapes ``(B, 49, C).permute(0, 2, 1)`` to ``(B, C, 7, 7)``,
applies ``AdaptiveMaxPool2d((6, 6))`` and flattens back with ``reshape(B, C, 36).permute(0, 2, 1)``.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from vlpeft.cli import main
from vlpeft.data.features import FeatureStore
from vlpeft.data.vladapter_features import import_vladapter_features, pool_tokens, store_id
from vlpeft.errors import DataError
from vlpeft.io import MARKER

C = 8  # feature width of the tiny files (2048 in the release)


def released_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """coco_CLIP.py L153 + L180: (C, 7, 7) layer-4 map -> (49, C) stored tokens."""
    return fmap.permute(1, 2, 0).reshape(49, -1)


def vladapter_downsample(tokens: torch.Tensor) -> torch.Tensor:
    """modeling_bart.py Downsample.downsample_inputs on (B, 49, C), line by line."""
    b, n, dim = tokens.shape
    x = tokens.permute(0, 2, 1)
    side = int(n**0.5)
    x = x.reshape(b, dim, side, side)
    x = torch.nn.AdaptiveMaxPool2d((6, 6))(x)
    x = x.reshape(b, dim, -1)
    return x.permute(0, 2, 1)


def write_h5(directory, img_id: str, tokens, dtype: str = "float32") -> None:
    """One file as the release has it (the float16 copy: restore_datasets.py write_h5)."""
    with h5py.File(directory / f"{img_id}.h5", "w") as f:
        f.create_group(img_id).create_dataset("features", data=np.asarray(tokens), dtype=dtype)


def grids(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [released_tokens(torch.randn(C, 7, 7, generator=g)) for _ in range(n)]


NAMES = ["COCO_val2014_000000000042", "COCO_train2014_000000000009", "2375429"]  # COCO x2, GQA/VG
IDS = [42, 9, 2375429]


@pytest.fixture
def h5_dir(tmp_path):
    d = tmp_path / "data_clip_RN101_att"
    d.mkdir()
    return d


# ---------------------------------------------------------------------------------------------- pooling


def test_pooling_equals_vladapters_adaptive_max_pool_on_the_released_layout():
    fmap = torch.randn(3, C, 7, 7)
    tokens = torch.stack([released_tokens(m) for m in fmap])
    expected = vladapter_downsample(tokens)
    assert torch.equal(pool_tokens(tokens), expected)
    # Also straight from the map: the writer's and the reader's reshapes are inverse.
    direct = torch.nn.AdaptiveMaxPool2d((6, 6))(fmap).flatten(2).transpose(1, 2)
    assert torch.equal(pool_tokens(tokens), direct)
    assert torch.equal(pool_tokens(tokens[0]), expected[0])  # one image, no batch dim
    half = tokens.half()
    assert pool_tokens(half).dtype == torch.float16
    assert torch.equal(pool_tokens(half), vladapter_downsample(half.float()).half())
    assert pool_tokens(tokens, "none") is tokens


def test_pooled_tokens_are_row_major_2x2_window_maxima():
    # Token t = grid cell (t // 7, t % 7) holds the value t; 7 -> 6 adaptive windows are cells i..i+1, so
    # pooled token 6i + j is the max of cells (i..i+1, j..j+1): the value 7(i + 1) + j + 1.
    tokens = torch.arange(49.0).reshape(49, 1)
    expected = torch.tensor([[7.0 * (i + 1) + j + 1] for i in range(6) for j in range(6)])
    assert torch.equal(pool_tokens(tokens), expected)


def test_store_ids_of_released_names():
    assert store_id("COCO_train2014_000000458752") == 458752
    assert store_id("COCO_val2014_000000000042") == 42
    assert store_id("2375429") == 2375429
    assert store_id("train-10171-0-img0") is None


# --------------------------------------------------------------------------------------------- the store


@pytest.mark.parametrize("source_dtype", ["float32", "float16"])
def test_written_store_loads_back_with_ids_shapes_and_values(h5_dir, tmp_path, source_dtype):
    feats = grids(3)
    for name, tokens in zip(NAMES, feats, strict=True):
        write_h5(h5_dir, name, tokens, source_dtype)
    out = tmp_path / "features"
    meta = import_vladapter_features([h5_dir], out, shard_size=2, dtype="float32", progress=False)
    store = FeatureStore(out)
    assert sorted(store.image_ids) == sorted(IDS) and len(store) == 3
    assert store.kinds == ("tokens",) and store.num_tokens("tokens") == 36 and store.width == C
    assert len(meta["shards"]) == 2 and meta["n_images"] == 3
    prov = store.provenance
    assert prov["source"] == "vladapter-h5" and prov["grid_pool"] == [6, 6] and prov["weights_sha256"] is None
    assert prov["source_dtypes"] == [source_dtype]
    got = store.get(IDS, "tokens")
    assert got.shape == (3, 36, C)
    for j, tokens in enumerate(feats):
        source = tokens.to(getattr(torch, source_dtype)).float()  # what the file holds
        assert torch.equal(got[j], vladapter_downsample(source[None])[0])  # a max: exact


def test_float16_store_and_no_pooling(h5_dir, tmp_path):
    feats = grids(2)
    for name, tokens in zip(NAMES[:2], feats, strict=True):
        write_h5(h5_dir, name, tokens, "float16")
    out = tmp_path / "features"
    import_vladapter_features([h5_dir], out, pool="none", progress=False)  # default dtype float16
    store = FeatureStore(out)
    assert store.dtype == "float16" and store.num_tokens("tokens") == 49
    assert "grid_pool" not in store.provenance
    assert torch.equal(store.get([42], "tokens")[0], feats[0].half().float())  # float16 -> float16: exact


def _data_root(root, coco_names: list[tuple[str, int]], nlvr: dict[str, int]) -> None:
    """A minimal prepared data root: a complete dir with a Karpathy file and an NLVR2 image table."""
    (root / "nlvr").mkdir(parents=True)
    images = [
        {"filepath": "val2014", "filename": f"{n}.jpg", "cocoid": i, "split": "val", "sentences": []}
        for n, i in coco_names
    ]
    (root / "dataset_coco.json").write_text(json.dumps({"images": images}))
    table = {n: {"id": i, "file": f"nlvr/images/{n}.png"} for n, i in nlvr.items()}
    (root / "nlvr" / "images.json").write_text(json.dumps(table))
    (root / MARKER).write_text("vlpeft 1\n")


def test_data_root_selects_its_images_and_names_their_ids(h5_dir, tmp_path):
    feats = grids(4)
    names = [NAMES[0], NAMES[1], "dev-850-0-img0", "COCO_val2014_000000000777"]
    for name, tokens in zip(names, feats, strict=True):
        write_h5(h5_dir, name, tokens)
    root = tmp_path / "root"
    _data_root(root, [(NAMES[0], 42), (NAMES[1], 9)], {"dev-850-0-img0": 5_000_001})
    out = tmp_path / "features"
    meta = import_vladapter_features([h5_dir], out, data_root=root, dtype="float32", progress=False)
    store = FeatureStore(out)
    assert sorted(store.image_ids) == [9, 42, 5_000_001] and meta["provenance"]["skipped_files"] == 1
    assert torch.equal(store.get([5_000_001], "tokens")[0], pool_tokens(feats[2]))
    # An image the root lists without an h5 file is refused before anything is written.
    _data_root(tmp_path / "root2", [(NAMES[0], 42), ("COCO_val2014_000000000001", 1)], {})
    with pytest.raises(DataError, match=r"COCO_val2014_000000000001\.h5"):
        import_vladapter_features([h5_dir], tmp_path / "f2", data_root=tmp_path / "root2", progress=False)
    assert not (tmp_path / "f2").exists()


# ---------------------------------------------------------------------------------------- bad input (CLI)


def _bad_key(d):
    with h5py.File(d / "2375429.h5", "w") as f:
        f.create_group("other")["features"] = np.zeros((49, C), np.float32)  # group not named after the file


def _bad_shape(d):
    write_h5(d, "2375429", np.zeros((50, C), np.float32))


def _bad_dtype(d):
    write_h5(d, "2375429", np.zeros((49, C), np.int32), "int32")


def _bad_width(d):
    write_h5(d, "2375429", np.zeros((49, C + 1), np.float32))


def _unreadable(d):
    (d / "2375429.h5").write_bytes(b"not an hdf5 file")


def _truncated(d):
    write_h5(d, "2375429", np.zeros((49, C), np.float32))
    data = (d / "2375429.h5").read_bytes()
    (d / "2375429.h5").write_bytes(data[: len(data) // 2])


def _overflow(d):
    write_h5(d, "2375429", np.full((49, C), 1e6, np.float32))  # finite in float32, inf in float16


def _no_id(d):
    write_h5(d, "train-10171-0-img0", np.zeros((49, C), np.float32))  # NLVR2 name: needs --data


def _same_id(d):
    write_h5(d, "42", np.zeros((49, C), np.float32))  # id 42 = COCO_val2014_000000000042


# The bad file sorts after two good ones (largest id): it fails after shards were staged (--shard-size 1).
@pytest.mark.parametrize(
    "make, needle",
    [
        (_bad_key, "no dataset '2375429/features'"),
        (_bad_shape, "shape (50, 8), expected (49, C)"),
        (_bad_dtype, "expected floating point"),
        (_bad_width, "feature width 9"),
        (_unreadable, "unreadable HDF5 file"),
        (_truncated, "unreadable HDF5 file"),
        (_overflow, "non-finite values"),
        (_no_id, "has no feature-store id"),
        (_same_id, "same feature-store id 42"),
    ],
)
def test_cli_rejects_malformed_files_in_one_line_and_writes_nothing(h5_dir, tmp_path, capsys, make, needle):
    for name, tokens in zip(NAMES[:2], grids(2), strict=True):
        write_h5(h5_dir, name, tokens)
    make(h5_dir)
    work = tmp_path / "work"
    work.mkdir()
    rc = main(["features-import", "--h5-dir", str(h5_dir), "--out", str(work / "features"),
               "--shard-size", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert needle in err, err
    bad = "42.h5" if make is _same_id else next(p.name for p in h5_dir.iterdir() if p.stem not in NAMES[:2])
    assert bad in err, err
    assert list(work.iterdir()) == []  # no store, no staging leftovers


def test_cli_rejects_a_directory_without_h5_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["features-import", "--h5-dir", str(empty), "--out", str(tmp_path / "features")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"{empty}: no .h5 files" in err, err
    assert not (tmp_path / "features").exists()


def test_cli_writes_a_store(h5_dir, tmp_path, capsys):
    for name, tokens in zip(NAMES, grids(3), strict=True):
        write_h5(h5_dir, name, tokens, "float16")
    out = tmp_path / "features"
    assert main(["features-import", "--h5-dir", str(h5_dir), "--out", str(out)]) == 0
    assert "3 images, tokens 36 x 8, float16, 1 shard(s)" in capsys.readouterr().out
    assert FeatureStore(out).get([9], "tokens").shape == (1, 36, C)
