"""Params validated whole when they load: method sections as strict as the rest, method combinations, and
a config base that imports nothing of the project (the method registry builds on it, not on vlpeft.config)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from vlpeft.config import load_params, params_from_dict
from vlpeft.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"compacter": {"n": True}}, "vqa.peft.compacter.n: expected a number, got a boolean"),
        ({"adapter": {"init_std": True}}, "vqa.peft.adapter.init_std: expected a number, got a boolean"),
        ({"hyperformer": {"projected_dim": False}}, "vqa.peft.hyperformer.projected_dim: expected a number"),
        ({"rank": True}, "vqa.peft.rank: expected a number, got a boolean"),
    ],
)
def test_booleans_are_refused_for_numbers_in_method_sections_too(section, message):
    with pytest.raises(ConfigError, match=message):
        params_from_dict({"vqa": {"peft": section}}, "p.yaml")


@pytest.mark.parametrize(
    ("peft", "message"),
    [
        ({"method": "bitfit", "routing": "vl"}, r"vqa\.peft: peft\.routing=vl needs method lora or .*bitfit"),
        ({"method": "frozen", "routing": "mul"}, r"vqa\.peft: peft\.routing=mul needs method .*frozen"),
        ({"method": "lora", "sharing": "shared_up"}, r"vqa\.peft: peft\.sharing=shared_up is not .* lora"),
    ],
)
def test_method_combinations_are_refused_when_params_load(peft, message):
    with pytest.raises(ConfigError, match=message):
        params_from_dict({"vqa": {"peft": peft}}, "p.yaml")


def test_a_variant_that_makes_a_bad_combination_is_refused_at_load():
    variants = {"best": {}, "routed": {"task.peft.routing": "vl"}}
    data = {"vqa": {"peft": {"method": "bitfit"}}, "variants": variants}
    with pytest.raises(ConfigError, match=r"variants\.routed \(vqa\).*routing=vl needs method"):
        params_from_dict(data, "p.yaml")


def test_vlpeft_config_gives_one_error_line_for_bitfit_with_routing():
    done = subprocess.run(
        [sys.executable, "-m", "vlpeft", "config", "-p", str(ROOT / "params.yaml"),
         "-S", "vqa.peft.method=bitfit", "-S", "vqa.peft.routing=vl"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "vqa.peft" in lines[0] and "routing=vl" in lines[0], done.stderr
    assert load_params([ROOT / "params.yaml"]).vqa.peft.method == "lora"  # the shipped params pass


def _project_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vlpeft"):
            names.append(node.module or "")
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("vlpeft")]
    return names


def test_the_config_base_is_a_leaf_and_the_registry_builds_on_it_not_on_config():
    assert _project_imports(ROOT / "vlpeft" / "config_base.py") == []
    registry = ROOT / "vlpeft" / "tuners" / "registry.py"
    runtime = [n for n in _project_imports(registry) if n != "vlpeft.config"]  # vlpeft.config: type hints
    assert runtime == ["vlpeft.config_base"]
    tree = ast.parse(registry.read_text())
    top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "vlpeft.config"]
    assert top == []  # vlpeft.config only ever under TYPE_CHECKING, for type hints
