"""Crash-safe publication of outputs (``vlpeft.io``): a real SIGKILL at each step of a replacement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlpeft.data.images import karpathy_images
from vlpeft.errors import DataError
from vlpeft.io import MARKER, atomic_dir, atomic_path, is_complete, prev_path, write_json

# A child that runs `vlpeft data synth` and SIGKILLs itself at one step of the replacement protocol.
CHILD = textwrap.dedent(
    """
    import os, shutil, signal, sys
    import vlpeft.io as vio
    from vlpeft.cli import main

    out, seed, point = sys.argv[1], sys.argv[2], sys.argv[3]
    target = os.path.abspath(out)
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    real_replace, real_rmtree, real_publish = os.replace, shutil.rmtree, vio._publish_dir

    def replace(src, dst):
        src, dst = os.path.abspath(src), os.path.abspath(dst)
        if point == "before-aside" and src == target:
            die()
        real_replace(src, dst)
        if point == "after-aside" and src == target:
            die()
        if point == "after-in" and dst == target:
            die()

    def rmtree(path, *a, **k):
        if point == "mid-delete" and str(path).endswith(".prev"):
            files = sorted(p for p in __import__("pathlib").Path(path).rglob("*") if p.is_file())
            for f in files[: len(files) // 2]:
                f.unlink()
            die()
        real_rmtree(path, *a, **k)

    def publish(tmp, path):
        if point == "before-publish":
            die()
        real_publish(tmp, path)

    os.replace, shutil.rmtree, vio._publish_dir = replace, rmtree, publish
    sys.exit(main(["data", "synth", "--out", out, "--seed", seed, "-S", "tracking.enabled=false",
                   "-S", "world.n_train=12", "-S", "world.n_val=4", "-S", "world.n_test=4",
                   "-S", "world.corpus_scenes=5"]))
    """
)
POINTS = ("before-publish", "before-aside", "after-aside", "after-in", "mid-delete")


def synth(out: Path, seed: int, point: str = "none") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(out), str(seed), point],
        capture_output=True,
        text=True,
        cwd=out.parent,
    )


def world_seed(root: Path) -> int:
    """The seed of a complete world (every image present, read through the real loader)."""
    entries = karpathy_images(root)
    assert all((root / "images" / e["filepath"] / e["filename"]).is_file() for e in entries)
    assert len(entries) == 20
    return json.loads((root / "world.json").read_text())["seed"]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_directory_replacement_never_leaves_a_directory_that_passes_for_complete(
    tmp_path, point
):
    out = tmp_path / "synthetic"
    assert synth(out, 1).returncode == 0
    assert world_seed(out) == 1

    killed = synth(out, 2, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    if point in ("before-publish", "before-aside"):
        assert world_seed(out) == 1  # untouched
    elif point == "after-aside":  # the instant between the two renames: only the complete old copy exists
        assert not out.exists() and is_complete(prev_path(out))
        with pytest.raises(DataError, match=r"data directory not found .* complete previous copy is at"):
            karpathy_images(out)
    else:
        assert world_seed(out) == 2
    if point == "mid-delete":  # the old copy was half deleted: its marker went first
        assert prev_path(out).is_dir() and not is_complete(prev_path(out))

    # Whatever was left, the next run replaces it and removes the leftovers.
    assert synth(out, 3).returncode == 0
    assert world_seed(out) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_readers_refuse_a_directory_without_its_marker(tmp_path):
    out = tmp_path / "synthetic"
    assert synth(out, 1).returncode == 0
    (out / MARKER).unlink()  # e.g. a copy made file by file, or an older half-deleted directory
    with pytest.raises(
        DataError, match=r"synthetic: incomplete data directory \(no \.vlpeft-complete marker"
    ):
        karpathy_images(out)


def test_published_files_get_umask_permissions_and_a_constant_marker(tmp_path):
    import torch
    from safetensors.torch import save_file

    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as d:
            save_file({"w": torch.zeros(2)}, str(d / "weights.safetensors"))  # safetensors writes 0600
            (d / "sub").mkdir()
        with atomic_path(tmp_path / "single.safetensors") as f:
            save_file({"w": torch.zeros(2)}, str(f))
    finally:
        os.umask(umask)
    assert (tmp_path / "model" / "weights.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "single.safetensors").stat().st_mode & 0o777 == 0o644
    first = (tmp_path / "model" / MARKER).read_bytes()
    with atomic_dir(tmp_path / "model") as d:
        (d / "x").write_text("x")
    assert (tmp_path / "model" / MARKER).read_bytes() == first


def test_writing_under_a_regular_file_names_the_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match=r"afile is a file, not a directory"):
        write_json(tmp_path / "afile" / "sub" / "m.json", {})
    with (
        pytest.raises(DataError, match=r"afile is a file, not a directory"),
        atomic_dir(tmp_path / "afile" / "d"),
    ):
        pass
