"""Components: module-level imports are stdlib and kfp only; each body calls its stage function."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

COMPONENTS = sorted(Path("components").glob("*.py"))


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: p.name)
def test_module_level_imports_are_stdlib_and_kfp_only(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only: bodies import vlpeft inside the function
        if isinstance(node, ast.Import):
            roots = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            roots = [(node.module or "").split(".")[0]]
        else:
            continue
        for root in roots:
            assert root in sys.stdlib_module_names or root in ("kfp", "components"), f"{path}: imports {root}"


def test_every_stage_function_has_a_component_and_no_pip():
    import components

    built = components.build("registry.example/vlpeft:0.1.0")
    names = set(vars(built))
    # no evaluate: train scores its test split once (the one scoring path, as in dvc.yaml)
    assert names == {"data", "pretrain", "features", "sweep_prepare", "sweep_worker", "sweep_finish", "train",
                     "collect_run", "summary", "register", "review"}  # fmt: skip
    for name, comp in vars(built).items():
        container = comp.component_spec.implementation.container
        assert container.image == "registry.example/vlpeft:0.1.0", name
        assert not any("pip" in part for part in container.command), name
        source = " ".join(container.command)
        assert "from vlpeft import stages" in source or "vlpeft" in source, name
