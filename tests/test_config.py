"""Config: merge order, overrides, and one clear error line for bad keys and values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vlpeft.config import ROUTING_KINDS, Params, RoutingKind, flatten, load_params
from vlpeft.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_and_merge_order(tmp_path):
    base = write(tmp_path / "params.yaml", "vqa:\n  epochs: 3\n  peft:\n    rank: 4\n")
    extra = write(tmp_path / "big.yaml", "vqa:\n  peft:\n    rank: 16\n")
    params = load_params([base, extra], ["vqa.peft.routing=mul", "caption.lr=0.01"])
    assert params.vqa.epochs == 3  # kept from the first file
    assert params.vqa.peft.rank == 16  # later file wins
    assert params.vqa.peft.routing == "mul"  # override wins over both
    assert params.caption.lr == 0.01
    assert params.caption.peft.routing == "vl"  # section default untouched


def test_routing_kinds_match_literal():
    assert set(ROUTING_KINDS) == set(RoutingKind.__args__)


def test_unknown_key_names_key_and_allowed(tmp_path):
    bad = write(tmp_path / "p.yaml", "vqa:\n  peft:\n    rnak: 4\n")
    with pytest.raises(ConfigError) as err:
        load_params([bad])
    msg = str(err.value)
    assert "p.yaml" in msg and "vqa.peft.rnak" in msg and "unknown key" in msg and "rank" in msg


def test_bad_value_names_allowed_values(tmp_path):
    bad = write(tmp_path / "p.yaml", "vqa:\n  peft:\n    routing: vllora\n")
    with pytest.raises(ConfigError) as err:
        load_params([bad])
    msg = str(err.value)
    assert "vqa.peft.routing" in msg and "vllora" in msg and "'mul_expand'" in msg


def test_unquoted_on_off_switches_read_as_written(tmp_path):
    # YAML 1.1 turns bare on/off into booleans; a user who writes `spice: off` means the word.
    f = write(tmp_path / "p.yaml", "evaluate:\n  spice: off\n  meteor: off\n")
    assert (load_params([f]).evaluate.spice, load_params([f]).evaluate.meteor) == ("off", "off")
    assert load_params([], ["evaluate.meteor=on"]).evaluate.meteor == "on"
    with pytest.raises(ConfigError, match=r"evaluate\.spice.*'auto' or 'off'.*got 'on'"):
        load_params([], ["evaluate.spice=on"])


def test_cross_field_check(tmp_path):
    bad = write(tmp_path / "p.yaml", "pretrain:\n  width: 30\n  heads: 4\n")
    with pytest.raises(ConfigError, match="divisible"):
        load_params([bad])
    with pytest.raises(ConfigError, match=r"registry\.variant 'gated' is not a variant"):
        load_params([], ["registry.variant=gated"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params([tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params([write(tmp_path / "x.yaml", "a: [1,\n")])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_params([], ["vqa.lr"])


def test_flatten_roundtrip_keys():
    flat = flatten(Params().model_dump(mode="json"))
    assert flat["vqa.peft.routing"] == "none"
    assert flat["sweep.routing"] == "none,mul,vl"


def test_cli_bad_params_is_one_line_exit_2(tmp_path):
    bad = write(tmp_path / "p.yaml", "sweep:\n  workers: 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vlpeft", "config", "--params", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sweep.workers" in proc.stderr


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"))
)
def test_shipped_params_and_configs_validate(name):
    root = Path(__file__).parents[1]
    params = load_params([root / "params.yaml", root / "configs" / name])
    assert params.data.source == "coco"  # every shipped config is a real-scale setting


def test_the_multitask_pipelines_params_validate():
    """multitask/params.yaml is read on its own by `make multitask` (cd multitask && dvc repro)."""
    params = load_params([Path(__file__).parents[1] / "multitask" / "params.yaml"])
    assert {"norouting", "vl", "adapter", "compacter", "prompt", "bitfit"} <= set(params.variants)
    assert params.registry.variant in params.variants
    from vlpeft.variants import resolve_variant

    methods = {resolve_variant(params, "multitask", v, 0).multitask.peft.method for v in params.variants}
    assert methods == {"lora", "adapter", "compacter", "hyperformer", "prompt", "bitfit"}  # the comparison


def test_shipped_params_yaml_is_the_embedded_default():
    params = load_params([Path(__file__).parents[1] / "params.yaml"])
    assert params.data.source == "synthetic"
    assert params.model.vision.startswith("models/")  # backbones from `vlpeft pretrain`, no hub access
