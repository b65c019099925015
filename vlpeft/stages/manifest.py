"""The stage manifest: each stage's declaration (``STAGE`` in its module), expanded into params keys and code.

``reads`` turns a declaration into the params entries DVC tracks for one run of the stage: whole
sections where the stage reads all of one, otherwise the keys it reads, from the pydantic models (so a new
config field is tracked the day it is added). ``code_modules`` is the code the stage runs, from its
modules' imports (``vlpeft.stages.imports``) plus what its dispatch tables name; ``code_paths`` writes it as
files and whole directories. ``dvc.yaml`` is written from these (``vlpeft.stages.dvcyaml``), and the Kubeflow
component list comes from ``STAGES`` too (``component_stages``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vlpeft.config import Params
from vlpeft.stages import backbones, datasets, featurestore, registry, reports, search, training
from vlpeft.stages.declare import StageDecl
from vlpeft.stages.imports import PACKAGE_DIR, closure, entry_unit, module_file
from vlpeft.tasks import TASKS, get_task

STAGES: dict[str, StageDecl] = {
    decl.name: decl
    for decl in (
        datasets.STAGE,
        backbones.STAGE,
        featurestore.STAGE,
        search.STAGE,
        training.STAGE,
        reports.STAGE,
        reports.MULTITASK_STAGE,
        registry.STAGE,
    )
}
EXECUTION_ONLY = "execution_only"  # the json_schema_extra flag of config fields no stage's result depends on


def get_stage(name: str) -> StageDecl:
    """The declaration of stage ``name`` (``KeyError`` naming the stages otherwise)."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage {name!r} (stages: {', '.join(STAGES)})") from None


def component_stages() -> dict[str, tuple[str, ...]]:
    """The pipeline's stages in order, each with the stage functions an orchestrator calls (one Kubeflow
    component each): where the Kubeflow component list comes from, as dvc.yaml's stages do."""
    return {name: decl.functions for name, decl in STAGES.items() if decl.functions}


# ------------------------------------------------------------------------------------------- params


def model_at(key: str) -> type[BaseModel] | None:
    """The config section class at dotted ``key`` of ``Params`` (None: a value, or a key of a free mapping
    such as ``variants.<name>``). An unknown key is a ``KeyError``."""
    node: Any = Params
    parts = key.split(".") if key else []
    for i, part in enumerate(parts):
        if node is None:
            return None  # below a mapping field: its keys are data
        fields = node.model_fields
        if part not in fields:
            raise KeyError(f"{key}: {'.'.join(parts[:i]) or 'params'} has no key {part!r}")
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            node = annotation
        elif i < len(parts) - 1 and getattr(annotation, "__origin__", None) is not dict:
            raise KeyError(f"{key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        else:
            node = None
    return node


def execution_only(key: str) -> bool:
    """Whether the config field at ``key`` is marked execution-only (changes how, never what, a stage
    computes: threads, heartbeats, retries, the sweep's storage URL, which may hold a password)."""
    parent, _, name = key.rpartition(".")
    section = model_at(parent)
    if section is None or name not in section.model_fields:
        return False
    extra = section.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(EXECUTION_ONLY))


def expand(pattern: str, task: str | None = None, variant: str | None = None) -> str:
    """A declared key with its placeholders filled in (``{task}`` -> the task's section name)."""
    if "{task}" in pattern:
        if task is None:
            raise ValueError(f"{pattern}: the stage runs per task; name one")
        section = get_task(task).section
        if section != task:  # dvc.yaml templates ${item} for both the task name and its section
            raise ValueError(f"task {task}: its params section is {section!r}, not its name")
    if "{variant}" in pattern and variant is None:
        raise ValueError(f"{pattern}: the stage runs per variant; name one")
    return pattern.replace("{task}", task or "").replace("{variant}", variant or "")


def cover(key: str, ignored: frozenset[str], spelled: dict[str, Any] | None = None) -> list[str]:
    """The params entries that track exactly the keys under ``key`` minus ``ignored`` and execution-only
    fields: ``[key]`` when nothing under it is left out, else the covers of its fields (in model order).

    ``spelled``: the params file's mapping at ``key``. A section the file does not spell out completely is
    tracked whole: DVC tracks a listed key only if the file has it, and a key added to the file later must
    still be seen (as a change of its section).
    """
    if key in ignored or (key and execution_only(key)):
        return []
    section = model_at(key)
    if section is None:
        return [key]
    if (
        spelled is not None
        and key
        and not (isinstance(spelled, dict) and all(name in spelled for name in section.model_fields))
    ):
        return [key]
    parts: list[str] = []
    whole = True
    for name in section.model_fields:
        child = f"{key}.{name}" if key else name
        sub = cover(child, ignored, spelled.get(name) if isinstance(spelled, dict) else None)
        whole = whole and sub == [child]
        parts += sub
    return [key] if whole and key else parts


def _has(raw: dict[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def spelled_at(raw: dict[str, Any] | None, key: str) -> Any:
    """The params file's value at dotted ``key`` (None when it lacks it, or when no file is given)."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def reads(
    decl: StageDecl,
    task: str | None = None,
    variant: str | None = None,
    overrides: Iterable[str] = (),
    raw: dict[str, Any] | None = None,
) -> list[str]:
    """The params entries one run of stage ``decl`` reads (for ``task``/``variant`` where it has them);
    ``overrides``: keys the command line sets itself (``-S key=value`` in dvc.yaml), so not read; ``raw``:
    the params file's mapping (see ``cover``; None: as if it spelled out every key)."""
    ignored = frozenset([*(expand(k, task, variant) for k in decl.ignores), *overrides])
    out: list[str] = []
    for pattern in decl.reads:
        key = expand(pattern, task, variant)
        while raw is not None and "." in key and spelled_at(raw, key) is None and model_at(key) is not None:
            key = key.rpartition(".")[0]  # a section the file lacks: its parent tracks it being added
        while raw is not None and "." in key and not _has(raw, key):
            key = key.rpartition(".")[0]  # a key the file lacks: DVC sees it added as a change of its parent
        for entry in cover(key, ignored, spelled_at(raw, key) if raw is not None else None):
            if entry not in out:
                out.append(entry)
    # an entry inside another one (registry.variant within a wholly tracked registry) adds nothing
    return [e for e in out if not any(e.startswith(f"{o}.") for o in out)]


def _is_mapping(key: str) -> bool:
    """Whether ``key`` is a config field holding a free mapping (``variants``, ``kfp.node_selector``)."""
    parent, _, name = key.rpartition(".")
    section = model_at(parent)
    if section is None or name not in section.model_fields:
        return False
    return getattr(section.model_fields[name].annotation, "__origin__", None) is dict


def leaf_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key of a params mapping down to its values, following the config sections (a free mapping such
    as ``variants.best`` is one value)."""
    out: list[str] = []
    for name, value in data.items():
        key = f"{prefix}{name}"
        try:
            section = model_at(key)
            mapping = section is None and _is_mapping(key)
        except KeyError:
            section, mapping = None, False
        if isinstance(value, dict) and (
            section is not None or (mapping and not any("." in k for k in value))
        ):
            out += leaf_keys(value, f"{key}.")
        else:
            out.append(key)
    return out


# --------------------------------------------------------------------------------------------- code


def dispatch_entries(decl: StageDecl, tasks: Iterable[str]) -> list[str]:
    """The ``module:name`` references the stage's dispatch tables hold for ``tasks`` (every method)."""
    from vlpeft.tuners.registry import method_specs

    out: list[str] = []
    if "tasks" in decl.dispatch:
        out += [get_task(t).binding for t in tasks]
    if "methods" in decl.dispatch:
        out += [spec.implementation for spec in method_specs()]
    return out


def code_modules(decl: StageDecl, tasks: Iterable[str] = ()) -> set[str]:
    """Every ``vlpeft`` module whose code a run of stage ``decl`` (for ``tasks``) runs."""
    entries = [decl.module, decl.cli, *decl.entry, *dispatch_entries(decl, tasks)]
    return closure([entry_unit(e) for e in entries])


def code_files(modules: Iterable[str]) -> set[Path]:
    """The source files of ``modules``, plus the data files beside them (a package's JSON tables)."""
    files = {module_file(m) for m in modules}
    out = {f for f in files if f is not None}
    for folder in {f.parent for f in out}:
        out |= {p for p in folder.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
    return out


def code_paths(modules: Iterable[str]) -> list[str]:
    """The code as paths relative to the package's parent dir: a directory where every file under it is
    code of the stage, else the files (sorted)."""
    files = code_files(modules)

    def tracked(folder: Path) -> list[Path]:
        return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]

    def walk(folder: Path) -> list[Path]:
        inside = tracked(folder)
        if inside and all(p in files for p in inside):
            return [folder]
        out = [p for p in sorted(folder.iterdir()) if p.is_file() and p in files]
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"):
            out += walk(sub)
        return out

    root = PACKAGE_DIR.parent
    return [p.relative_to(root).as_posix() for p in walk(PACKAGE_DIR)]


def tasks_of(decl: StageDecl, params: Params) -> list[str]:
    """The tasks a per-task stage runs in the local pipeline: ``sweep.tasks`` (``[]`` for other stages)."""
    needs_task = any("{task}" in k for k in (*decl.reads, *decl.ignores)) or "tasks" in decl.dispatch
    return list(params.sweep.tasks) if needs_task else []


__all__ = ["STAGES", "TASKS", "code_modules", "code_paths", "component_stages", "get_stage", "reads"]
