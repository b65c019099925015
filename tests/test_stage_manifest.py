"""The stage manifest against the real DVC: every params key marks exactly the stages that read it, a code
change in a module a stage runs marks it, and the committed dvc.yaml files are what the manifest writes.

One scratch DVC repository (copies of dvc.yaml, params.yaml, .dvcignore and the package; placeholder data),
every stage committed once, then only ``status`` calls (DVC's own API in this process: one call checks many
keys at once, grouped so that no two changed keys fall under the same tracked entry of any stage).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc_run import run_dvc

from vlpeft.config import load_params
from vlpeft.stages import dvcyaml, manifest
from vlpeft.stages.imports import PACKAGE_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_files_agree_with_the_manifest():
    assert dvcyaml.write_or_check([ROOT / f for f in dvcyaml.DVC_FILES], ROOT, check=True) == []


def _stage_status(repo_dir: Path) -> dict[str, Any]:
    from dvc.repo import Repo

    with contextlib.chdir(repo_dir), Repo(str(repo_dir)) as repo:
        return repo.status()


def _changed(status: dict[str, Any], params_only: bool = False) -> dict[str, set[str]]:
    """Per stage: the params keys and dep paths DVC reports changed (``params_only``: the keys only; a data
    dep path interpolated from a param, as register's run dir, changes with that param, which it reads)."""
    out: dict[str, set[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            for path, what in (entry.get("changed deps") or {}).items():
                if params_only and not isinstance(what, dict):
                    continue
                keys = set(what) if isinstance(what, dict) else {path}
                out.setdefault(stage.split(":")[-1], set()).update(keys)
    return out


def _placeholder(path: Path) -> None:
    if path.exists():
        return
    if path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / "f").write_text("x\n")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The root pipeline in a scratch repo, every stage committed as up to date."""
    from dvc.repo import Repo

    repo = tmp_path_factory.mktemp("manifest-dvc")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(
        PACKAGE_DIR, repo / PACKAGE_DIR.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    run_dvc(["init", "-q"], repo)
    with contextlib.chdir(repo), Repo(str(repo)) as dvc:
        for stage in dvc.index.stages:
            for item in [*stage.deps, *stage.outs]:
                if str(item.def_path) != "params.yaml" and not item.def_path.endswith(".yaml"):
                    _placeholder(repo / item.def_path)
        dvc.commit(force=True)
    assert _changed(_stage_status(repo)) == {}
    return repo


def _runs(params_raw: dict[str, Any]) -> dict[str, tuple[dvcyaml.DvcStage, str | None, str | None]]:
    """Every DVC stage instance of the root pipeline: name -> (binding, task, variant)."""
    params = load_params([ROOT / "params.yaml"])
    out = {}
    for name, binding in dvcyaml.DVC_FILES["dvc.yaml"].items():
        tasks = dvcyaml.stage_tasks(binding, params) or [None]
        variants = list(params.variants) if binding.variant else [None]
        seeds = params.seeds if name == "train" else [None]
        for task in tasks:
            for variant in variants:
                for seed in seeds:
                    key = "-".join(str(p) for p in (task, variant, seed) if p is not None)
                    out[f"{name}@{key}" if key else name] = (binding, task, variant)
    return out


def _run_entries(runs, raw) -> dict[str, set[str]]:
    """Per stage: the params entries its declared reads (manifest, its task and variant) come to, plus the
    task-specific entries a foreach template lists for every task (see vlpeft.stages.dvcyaml)."""
    params = load_params([ROOT / "params.yaml"])
    out = {}
    for name, (binding, task, variant) in runs.items():
        entries = set(dvcyaml.run_reads(binding, task, raw, variant))
        if binding.per_task:
            for other in dvcyaml.stage_tasks(binding, params):
                for e in dvcyaml.run_reads(binding, other, raw, variant):
                    if e.startswith(f"{other}.") and not _has(raw, task + e[len(other) :]):
                        entries.add(e)  # only the other task's section has it: listed literally
        out[name] = entries
    return out


def _readers(key: str, entries: dict[str, set[str]]) -> set[str]:
    return {name for name, es in entries.items() if any(key == e or key.startswith(f"{e}.") for e in es)}


def _has(raw: dict[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _changed_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, list):
        return [*value, "changed"]
    if isinstance(value, dict):
        return {**value, "changed": 1}
    return f"{value}-changed"


def _change(scratch: Path, raw: dict[str, Any], keys: list[str]) -> dict[str, set[str]]:
    """Change ``keys`` in the scratch repo's params.yaml; per stage, the entries DVC then reports changed."""
    changed = copy.deepcopy(raw)
    for key in keys:
        value: Any = raw
        for part in key.split("."):
            value = value[part]
        _set(changed, key, _changed_value(value))
    original = (scratch / "params.yaml").read_text()
    (scratch / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        return _changed(_stage_status(scratch), params_only=True)
    finally:
        (scratch / "params.yaml").write_text(original)


@pytest.mark.slow
def test_every_params_key_marks_exactly_the_stages_that_read_it(scratch):
    """Every key of params.yaml changed at once: each stage reports exactly the tracked entries holding a key
    its declaration reads (a reported whole section stands for every changed key in it: DVC compares a
    section as one value). Then the stale cases of issue 20 and two keys no sweep reads, one at a time."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    runs = _runs(raw)
    entries = _run_entries(runs, raw)
    # sweep.tasks and seeds decide which stages exist (foreach/matrix), not what one of them reads
    keys = [k for k in manifest.leaf_keys(raw) if k not in ("sweep.tasks", "seeds")]
    assert "vqa.peft.layernorm_scope" in keys and "vqa.peft.compacter.n" in keys and "sweep.storage" in keys

    marked: dict[str, set[str]] = {key: set() for key in keys}
    for stage, reported in _change(scratch, raw, keys).items():
        for entry in reported:
            hits = [k for k in keys if k == entry or k.startswith(f"{entry}.")]
            assert hits, (stage, entry)
            for key in hits:
                marked[key].add(stage)
    expected = {k: _readers(k, entries) for k in keys}
    wrong = {k: (sorted(marked[k]), sorted(expected[k])) for k in keys if marked[k] != expected[k]}
    assert wrong == {}

    # One key at a time: the keys every sweep trial reads, and two it does not.
    for key in ("vqa.peft.layernorm_scope", "vqa.peft.sharing", "vqa.peft.compacter.n"):
        assert set(_change(scratch, raw, [key])) == expected[key] >= {"sweep@vqa"}, key
        assert "sweep@caption" not in expected[key]
    assert set(_change(scratch, raw, ["vqa.epochs"])) == {f"train@vqa-{v}-0" for v in raw["variants"]}
    assert _change(scratch, raw, ["sweep.heartbeat_interval", "sweep.storage"]) == {}  # execution only


@pytest.mark.slow
def test_a_code_change_marks_the_stages_that_run_that_code(scratch):
    params = load_params([ROOT / "params.yaml"])
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    runs = _runs(raw)
    code = {
        name: manifest.code_modules(manifest.get_stage(binding.stage), dvcyaml.stage_tasks(binding, params))
        for name, (binding, _, _) in runs.items()
    }
    files = {
        "vlpeft/data/images.py": "vlpeft.data.images",  # pretrain reads images through it (issue 20)
        "vlpeft/data/scenes.py": "vlpeft.data.scenes",
        "vlpeft/train/loop.py": "vlpeft.train.loop",
        "vlpeft/tuners/lora/layer.py": "vlpeft.tuners.lora.layer",  # reached through the method table only
        "vlpeft/eval/compare.py": "vlpeft.eval.compare",
        "vlpeft/routing.py": "vlpeft.routing",
    }
    assert {"pretrain", "features"} <= {n for n, mods in code.items() if "vlpeft.data.scenes" in mods}
    for path, module in files.items():
        target = scratch / path
        original = target.read_text()
        target.write_text(original + "\n# changed\n")
        try:
            marked = set(_changed(_stage_status(scratch)))
        finally:
            target.write_text(original)
        assert marked == {n for n, mods in code.items() if module in mods}, path
    assert "data" not in {n for n, mods in code.items() if "vlpeft.train.loop" in mods}
    assert {n for n, mods in code.items() if "vlpeft.tuners.lora.layer" in mods} >= {
        "sweep@vqa",
        "train@vqa-best-0",
    }


def test_the_keys_the_sweep_ignores_are_the_ones_every_trial_sets():
    """``TRIAL_OVERRIDES`` (not in the sweep's params) never reach a trial; a key the sweep reads does."""
    from vlpeft.config import deep_merge, params_from_dict, params_to_dict
    from vlpeft.sweep.space import TRIAL_OVERRIDES, trial_params, with_task_rank

    base = load_params([ROOT / "params.yaml"])
    values = {"routing": "vl", "rank": 4}

    def trial(update: dict[str, Any]) -> dict[str, Any]:
        params = params_from_dict(deep_merge(params_to_dict(base), update))
        return params_to_dict(trial_params(with_task_rank(params, "vqa"), "vqa", values, seed=0))

    reference = trial({})
    assert set(TRIAL_OVERRIDES) == {"peft.routing", "epochs"}
    assert trial({"vqa": {"peft": {"routing": "mul"}, "epochs": 7}}) == reference
    assert trial({"vqa": {"peft": {"layernorm_scope": "all"}}}) != reference  # read: declared for the sweep
    assert trial({"vqa": {"peft": {"compacter": {"n": 4}}}}) != reference


def test_the_component_list_names_real_stage_functions():
    import importlib

    stages = manifest.component_stages()
    assert list(stages) == ["data", "pretrain", "features", "sweep", "train", "summary", "register"]
    for name, functions in stages.items():
        module = importlib.import_module(manifest.get_stage(name).module)
        assert all(callable(getattr(module, f, None)) for f in functions), name
    assert "evaluate" not in stages["train"]  # one scoring path: train scores its test split once
