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
