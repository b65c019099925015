"""Hostile or broken params: every case is refused with one ``ConfigError`` line naming the file or override
and the key, quickly (an alias bomb is refused before it expands), never a traceback."""

# ruff: noqa: E501 (case tables: one case per line reads best)
from __future__ import annotations

import subprocess
import sys

import pytest

from vlpeft.config import MAX_YAML_DEPTH, load_params
from vlpeft.errors import ConfigError

BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
)  # 9**9 = 387 million strings once expanded, 600 bytes on disk


FILES = {
    "alias bomb": (BOMB, r"aliases expand to more than 100000 values"),
    "duplicate section": ("vqa:\n  lr: 0.1\nvqa:\n  epochs: 2\n", r"duplicate key 'vqa' \(line 3, first on line 1\)"),
    "duplicate key": ("vqa:\n  lr: 0.1\n  lr: 0.2\n", r"duplicate key 'lr' \(line 3, first on line 2\)"),
    "deep flow nesting": ("vqa: " + "[" * 5000 + "]" * 5000, rf"nested deeper than {MAX_YAML_DEPTH} levels"),
    "deep block nesting": ("".join(f"{' ' * i}k{i}:\n" for i in range(200)) + " " * 200 + "x: 1\n", "nested deeper"),
    "python tag": ("vqa: !!python/object/apply:os.system [echo hi]\n", r"could not determine a constructor"),
    "not a mapping": ("- 1\n- 2\n", r"top level must be a mapping"),
    "broken flow": ("vqa:\n  lr: [1\n", r"not valid YAML \(expected ',' or '\]'"),
    "inf lr": ("vqa:\n  lr: .inf\n", r"vqa\.lr: Input should be a finite number"),
    "nan alpha": ("vqa:\n  peft:\n    alpha: .nan\n", r"vqa\.peft\.alpha: Input should be a finite number"),
    "-inf weight decay": ("caption:\n  weight_decay: -.inf\n", r"caption\.weight_decay: Input should be a finite"),
    "nan in a list": ("sweep:\n  lr: [0.1, .nan]\n", r"sweep\.lr\.1: Input should be a finite number"),
    "seed 2**64": ("vqa:\n  seed: 18446744073709551616\n", r"vqa\.seed: out of range, at most 4294967295"),
    "negative seed": ("seed: -1\n", r"seed: Input should be greater than or equal to 0"),
    "seeds 2**70": ("seeds: [0, 1180591620717411303424]\n", r"seeds: out of range"),
    "huge epochs": ("vqa:\n  epochs: 100000000000000000000\n", r"vqa\.epochs: out of range"),
    "huge rank": ("vqa:\n  peft:\n    rank: 1000000000\n", r"vqa\.peft\.rank: Input should be less than or equal to 4096"),
    "huge sweep rank": ("sweep:\n  rank: [4, 100000]\n", r"sweep\.rank\.1: Input should be less than or equal to 4096"),
    "bad memory quantity": ("kfp:\n  train:\n    memory: 8GB\n", r"kfp\.train\.memory: '8GB' is not a Kubernetes quantity"),
    "bad cpu quantity": ("kfp:\n  train:\n    cpu: two\n", r"kfp\.train\.cpu: 'two' is not a Kubernetes quantity"),
    "negative quantity": ("kfp:\n  cpu_task:\n    shm: -1Gi\n", r"'-1Gi' is not a Kubernetes quantity"),
    "bad workspace size": ("kfp:\n  workspace_size: 20 Gi\n", r"'20 Gi' is not a Kubernetes quantity"),
    "bad backoff": ("kfp:\n  retry_backoff: soon\n", r"kfp\.retry_backoff: 'soon' is not a duration"),
}  # fmt: skip


@pytest.mark.parametrize("case", FILES)
def test_hostile_params_files_are_one_line(case, tmp_path):
    text, message = FILES[case]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_params([path])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_valid_kubernetes_quantities_and_durations_pass(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "kfp:\n  train: {cpu: 500m, memory: 1.5G, shm: 64Mi}\n  workspace_size: 1e3\n  retry_backoff: 1m30s\n"
    )
    kfp = load_params([path]).kfp
    assert (kfp.train.cpu, kfp.train.memory, kfp.workspace_size, kfp.retry_backoff) == (
        "500m",
        "1.5G",
        "1e3",
        "1m30s",
    )


def test_anchors_and_small_aliases_still_work(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("vqa:\n  peft: &p {rank: 4, routing: mul}\ncaption:\n  peft: *p\n")
    params = load_params([path])
    assert params.caption.peft.rank == 4 and params.caption.peft.routing == "mul"


OVERRIDES = {
    "vqa.lr=[": r"override vqa\.lr: not valid YAML",
    "vqa.lr={a: {b: [1,2": r"override vqa\.lr: not valid YAML",
    "vqa..lr=1": r"'vqa\.\.lr' is not a dotted key",
    "=1": r"'' is not a dotted key",
    "vqa.lr=.inf": r"vqa\.lr: Input should be a finite number",
    "vqa.peft.alpha=nan": r"vqa\.peft\.alpha: Input should be a finite number",  # the string 'nan' too
    "vqa.seed=18446744073709551616": r"vqa\.seed: out of range",
    "vqa.lr=" + "[" * 100 + "]" * 100: r"nested deeper than",
    "vqa.lr=" + "1" * 5000: r"override vqa\.lr: not a usable value \(Exceeds the limit",
}


@pytest.mark.parametrize("override", OVERRIDES)
def test_malformed_overrides_are_one_line(override):
    with pytest.raises(ConfigError, match=OVERRIDES[override]) as info:
        load_params([], [override])
    assert "\n" not in str(info.value)


def test_cli_prints_one_line_and_no_password_for_a_malformed_set_value(tmp_path):
    secret = "Pw-in-set-9"
    for value in (
        f"sweep.storage=[postgresql://u:{secret}@h/db",
        f"sweep.storage=postgresql://u@h/db?password={secret}&x={{",
    ):
        r = subprocess.run([sys.executable, "-m", "vlpeft", "config", "--set", value], cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
        out = r.stdout + r.stderr
        assert secret not in out
        if r.returncode != 0:
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        else:
            assert "password=***" in r.stdout


# ------------------------------------------------------------------------ hostile input files (not params)


def _png(path, width: int, height: int) -> None:
    """A valid 1-bit grayscale PNG of ``width`` x ``height`` zeros: a few KB on disk per 100 M pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)
    idat = zlib.compressobj(9)
    body = b"".join(idat.compress(row) for _ in range(height)) + idat.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("side", "pixels"), [(20000, 400000000), (12000, 144000000)])
def test_decompression_bomb_png_is_one_line(side, pixels, tmp_path):
    """Above Pillow's limit it raises; between 1x and 2x the limit it only warns and decodes: both refused."""
    from vlpeft.data.images import load_image
    from vlpeft.errors import DataError

    bomb = tmp_path / "bomb.png"
    _png(bomb, side, side)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DataError, match=rf"bomb\.png: image too large to decode \({pixels} pixels"):
        load_image(bomb)


def test_huge_hdf5_shape_is_one_line(tmp_path):
    import h5py

    from vlpeft.data.vladapter_features import read_grid
    from vlpeft.errors import DataError

    path = tmp_path / "123.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("123/features", shape=(49, 10**9), dtype="float32")  # declared, never allocated
    assert path.stat().st_size < 100_000
    with pytest.raises(
        DataError, match=r"123\.h5: dataset '123/features' has shape \(49, 1000000000\), more than"
    ):
        read_grid(path)


def test_pickle_bin_in_a_checkpoint_folder_is_refused_unread(tmp_path):
    """A ``.bin`` beside the safetensors of a model folder: refused by name, never unpickled (the pickle here
    would create a file if it were loaded)."""
    import pickle

    from vlpeft.errors import DataError
    from vlpeft.io import refuse_pickles

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    folder = tmp_path / "best" / "lm"
    folder.mkdir(parents=True)
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(
        DataError, match=r"lm/adapter_model\.bin: pickle-format file in a model folder refused"
    ):
        refuse_pickles(tmp_path / "best")
    assert not (tmp_path / "pwned").exists()


def test_kubeflow_params_parameter_uses_the_same_strict_loader():
    """A pipeline run's ``params_yaml`` parameter is user input too."""
    from vlpeft.kfp_task import parse_params

    with pytest.raises(ConfigError, match=r"pipeline parameter params_yaml: aliases expand to more than"):
        parse_params(BOMB)
    with pytest.raises(ConfigError, match=r"params_yaml: duplicate key 'vqa'"):
        parse_params("vqa: {}\nvqa: {}\n")
