"""A full disk, on a real full filesystem (a tiny tmpfs): every writing command ends in one line naming the
path and "no space left", exit code 2, and leaves nothing half written."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from tests.cli_helpers import one_error_line
from vlpeft.cli import main
from vlpeft.errors import DataError


def leftovers(disk) -> list[str]:
    return sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.name != "filler")


def test_data_synth_on_a_full_disk(small_disk, tmp_path, capsys, monkeypatch):
    disk = small_disk("512k", free=64 * 1024)  # room for the first images, not for the world
    monkeypatch.chdir(tmp_path)
    rc = main(["data", "synth", "--out", str(disk / "world"), "-S", "world.n_train=300",
               "-S", "world.corpus_scenes=10", "-S", "tracking.enabled=false"])  # fmt: skip
    one_error_line(capsys, rc, str(disk / "world"), "no space left on device")
    assert leftovers(disk) == []  # the staging directory went with the error


def test_evaluate_on_a_full_disk(small_disk, tiny_world, capsys):
    disk = small_disk("256k", free=0)
    questions = json.loads((tiny_world / "vqa" / "test_questions.json").read_text())["questions"]
    predictions = disk.parent / "predictions.json"
    predictions.write_text(
        json.dumps([{"question_id": q["question_id"], "answer": "yes"} for q in questions])
    )
    rc = main(["evaluate", "vqa", "--questions", str(tiny_world / "vqa" / "test_questions.json"),
               "--annotations", str(tiny_world / "vqa" / "test_annotations.json"),
               "--predictions", str(predictions), "--out", str(disk / "metrics.json")])  # fmt: skip
    one_error_line(capsys, rc, f"{disk / 'metrics.json'}: no space left on device")
    assert leftovers(disk) == []


def test_safetensors_write_on_a_full_disk_names_the_file(small_disk):
    from vlpeft.io import atomic_dir, save_tensors

    disk = small_disk("256k", free=8 * 1024)
    with (
        pytest.raises(DataError, match=r"/w\.safetensors: no space left on device") as info,
        atomic_dir(disk / "model") as tmp,
    ):
        save_tensors({"w": torch.zeros(64 * 1024)}, tmp / "w.safetensors")  # 256 KB
    assert str(disk) in str(info.value)
    assert leftovers(disk) == []


def test_zip_extraction_on_a_full_disk(small_disk, tmp_path):
    from vlpeft.data.archive import safe_extract

    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images/a.bin", b"\0" * (1 << 20))  # 1 MB of zeros: a 1 KB archive (a small zip bomb)
    disk = small_disk("256k", free=64 * 1024)
    with pytest.raises(
        DataError, match=r"no space left on device to extract images\.zip \(0\.00 GB of members"
    ):
        safe_extract(archive, disk / "raw")
    assert leftovers(disk) == ["raw"]  # the destination exists (created first), empty
