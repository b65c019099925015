"""Feature store: round trip vs the encoder run directly, shards/index/provenance, clear errors, atomicity."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTModel

from vlpeft.config import PretrainConfig
from vlpeft.data.features import FeatureStore, extract_features
from vlpeft.errors import DataError
from vlpeft.models.vision import VisionEncoder
from vlpeft.pretrain.vit import build_image_processor


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny encoder: one thread is faster, and does not stall when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = ViTModel(config, add_pooling_layer=False).eval()
    return VisionEncoder(
        model, build_image_processor(PretrainConfig(vit={"image_size": 32})), name="tiny-vit"
    )


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Eight small PNGs with non-contiguous image ids."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    out = []
    for k in range(8):
        path = root / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        out.append((100 + 7 * k, path))
    return out


def direct(encoder, items, kind, batch_size=None):
    """The encoder run directly on ``items`` (in batches of ``batch_size``, as the extractor does)."""
    batch_size = batch_size or len(items)
    with torch.no_grad():
        return torch.cat(
            [
                encoder(encoder.preprocess([Image.open(p) for _, p in items[i : i + batch_size]]), kind=kind)
                for i in range(0, len(items), batch_size)
            ]
        )


def test_round_trip_fp32_exact_with_shards_index_and_provenance(encoder, items, tmp_path):
    out = tmp_path / "features"
    meta = extract_features(
        encoder,
        items,
        out,
        kind="both",
        batch_size=3,
        shard_size=3,
        extra_provenance={"data_root": "somewhere"},
    )
    # 8 images, shards of 3 (batches of 3 do not line up with anything else): 3 + 3 + 2 rows.
    assert [s["rows"] for s in meta["shards"]] == [3, 3, 2]
    index = json.loads((out / "index.json").read_text())
    assert index["index"][4] == [items[4][0], 1, 1]
    assert sorted(p.name for p in out.iterdir()) == [
        ".vlpeft-complete",
        "index.json",
        *(f"shard-0000{i}.safetensors" for i in range(3)),
    ]
    umask = os.umask(0)
    os.umask(umask)
    # Shared artifact: umask permissions, not safetensors' 0600.
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}

    store = FeatureStore(out)
    assert len(store) == 8 and items[0][0] in store and 5 not in store
    assert store.width == 32 and store.kinds == ("pooled", "tokens")
    assert store.num_tokens("pooled") == 1 and store.num_tokens("tokens") == 17
    prov = store.provenance
    assert prov["encoder"] == "tiny-vit" and prov["weights_sha256"] == encoder.weights_hash()
    assert prov["pooling"] == "cls" and prov["dtype"] == "float32" and prov["width"] == 32
    assert prov["kinds"] == ["pooled", "tokens"] and prov["data_root"] == "somewhere"
    assert prov["preprocessing"]["size"] == {"height": 32, "width": 32}

    order = [6, 0, 3, 7, 3]  # any order, repeats allowed, across shards
    ids = [items[i][0] for i in order]
    for kind in ("pooled", "tokens"):
        got = store.get(ids, kind)
        assert got.dtype == torch.float32
        # Bit-exact against the same computation (same batches); close to one big batch.
        assert torch.equal(got, direct(encoder, items, kind, batch_size=3)[order])
        torch.testing.assert_close(got, direct(encoder, items, kind)[order])
        # The memory-mapped row reader gives the same numbers as the in-memory table.
        assert torch.equal(FeatureStore(out, in_memory=False).get(ids, kind), got)
    assert store.get([], "pooled").shape == (0, 1, 32)
    store.require(kind="tokens", width=32, weights_sha256=encoder.weights_hash())


def test_fp16_within_tolerance(encoder, items, tmp_path):
    extract_features(encoder, items, tmp_path / "f16", kind="pooled", dtype="float16", shard_size=5)
    store = FeatureStore(tmp_path / "f16")
    assert store.dtype == "float16" and store.provenance["dtype"] == "float16"
    got = store.get([i for i, _ in items])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, direct(encoder, items, "pooled"), rtol=1e-3, atol=2e-3)


def test_clear_errors(encoder, items, tmp_path):
    out = tmp_path / "features"
    extract_features(encoder, items[:4], out, kind="pooled")
    store = FeatureStore(out)
    with pytest.raises(DataError, match="image id 999 is not in the feature store"):
        store.get([items[0][0], 999])
    with pytest.raises(DataError, match="not 'tokens'"):
        store.get([items[0][0]], "tokens")
    with pytest.raises(DataError, match="width 32, but the model expects 64"):
        store.require(width=64)
    with pytest.raises(DataError, match="re-run `vlpeft features`"):
        store.require(weights_sha256="0" * 64)
    with pytest.raises(DataError, match="nothing: feature store not found"):
        FeatureStore(tmp_path / "nothing")
    with pytest.raises(DataError, match="appears more than once"):
        extract_features(encoder, [items[0], items[0]], tmp_path / "dup")
    # A shard swapped in from another store (other image ids) is refused, not silently misread.
    other = tmp_path / "other"
    extract_features(encoder, items[4:], other, kind="pooled")
    (other / "shard-00000.safetensors").replace(out / "shard-00000.safetensors")
    with pytest.raises(DataError, match="the index and its shards do not match"):
        FeatureStore(out).get([items[0][0]])
    (out / "shard-00000.safetensors").unlink()
    with pytest.raises(DataError, match="shard missing"):
        FeatureStore(out)


def test_failed_extraction_leaves_the_old_store_untouched(encoder, items, tmp_path):
    out = tmp_path / "features"
    extract_features(encoder, items[:2], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png"):
        extract_features(encoder, [*items, (1, bad)], out, batch_size=2, shard_size=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("in_memory", [True, False])
def test_swapped_index_rows_are_refused(encoder, items, tmp_path, in_memory):
    out = tmp_path / "features"
    extract_features(encoder, items[:4], out, kind="pooled", shard_size=2)
    index = json.loads((out / "index.json").read_text())
    a, b = items[0][0], items[3][0]
    assert FeatureStore(out, in_memory=in_memory).get([a, b]).shape == (2, 1, 32)
    # Swap where two images point (image a -> b's row and back): every lookup would get the other's features.
    rows = {r[0]: r for r in index["index"]}
    rows[a][1:], rows[b][1:] = rows[b][1:], rows[a][1:]
    (out / "index.json").write_text(json.dumps(index))
    store = FeatureStore(out, in_memory=in_memory)
    with pytest.raises(DataError, match=rf"row 1 holds image {b}, but index.json says image {a}: the index and"):
        store.get([a])
    assert store.get([items[1][0]]).shape == (1, 1, 32)  # rows the edit did not touch still read


def test_truncated_shard_is_one_data_error(encoder, items, tmp_path):
    out = tmp_path / "features"
    extract_features(encoder, items[:4], out, kind="pooled")
    shard = out / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"shard-00000.safetensors: unreadable feature shard \(.+\); re-run"):
        FeatureStore(out).get([items[0][0]])
