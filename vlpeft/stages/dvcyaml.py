"""``dvc.yaml``'s ``params:`` and code ``deps:``, written from the stage manifest (``vlpeft dvc-yaml``).

Why written into the committed file rather than generated whole: ``dvc.yaml`` stays the one place that names
paths (commands, data deps, outs, plots, its comments), as the design wants, while what each stage *reads*
(params keys, code) can no longer drift: ``vlpeft dvc-yaml`` rewrites exactly those two lists of every stage
bound below from the manifest, keeping everything else byte for byte, and ``vlpeft dvc-yaml --check`` (run by
the tests) fails on any missing or extra key or dep.

A foreach/matrix stage over tasks is one template for every task: entries that exist for every task are
written with ``${item}``; an entry only some tasks' sections have (``caption.val_cider_images``) is written
literally, so the other tasks' runs track it too (DVC refuses a missing key: the one place a run may track
more than it reads).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlpeft.config import Params, load_params
from vlpeft.errors import ConfigError
from vlpeft.stages import manifest


@dataclass(frozen=True)
class DvcStage:
    """How one ``dvc.yaml`` stage runs a manifest stage.

    ``task``: the DVC expression of its task (``${item}``), or a fixed task name; ``variant``: the same for
    its variant. ``overrides``: params keys the stage's command sets or iterates itself (``-S key=value``,
    a ``matrix:`` over a params list), so the stage does not read them from the params file.
    """

    stage: str
    task: str | None = None
    variant: str | None = None
    overrides: tuple[str, ...] = ()

    @property
    def per_task(self) -> bool:
        return self.task is not None and self.task.startswith("${")


# Every stage of both DVC projects, by dvc.yaml file (relative to the repository root) and stage name.
DVC_FILES: dict[str, dict[str, DvcStage]] = {
    "dvc.yaml": {
        "data": DvcStage("data"),
        "pretrain": DvcStage("pretrain"),
        "features": DvcStage("features"),
        "sweep": DvcStage("sweep", task="${item}"),
        "train": DvcStage("train", task="${item.task}", variant="${item.variant}"),
        "summary": DvcStage("summary"),
        "register": DvcStage("register", task="${item}"),
    },
    "multitask/dvc.yaml": {
        "data": DvcStage("data"),
        "pretrain": DvcStage("pretrain"),
        "features": DvcStage("features"),
        # Its command sets multitask.lr (-S, from the matrix over multitask.lr_grid); the section is still
        # tracked whole: multitask/params.yaml spells only the keys it changes (DVC needs each listed key).
        "train": DvcStage("train", task="multitask", variant="${item.variant}"),
        "summary": DvcStage("multitask-summary"),
        "register": DvcStage("register", task="multitask"),
    },
}
VARIANT = "\x00variant\x00"  # the variant while entries are computed; then replaced by its DVC template


def stage_tasks(binding: DvcStage, params: Params) -> list[str]:
    """The tasks the dvc.yaml stage runs: its fixed task, or ``sweep.tasks`` (what its foreach iterates)."""
    if binding.task is None:
        return []
    return list(params.sweep.tasks) if binding.per_task else [binding.task]


def run_reads(
    binding: DvcStage, task: str | None, raw: dict[str, Any], variant: str | None = VARIANT
) -> list[str]:
    """The params entries one run of the stage reads (``task``, ``variant``: that run's; ``raw``: the
    params file's mapping)."""
    decl = manifest.get_stage(binding.stage)
    if binding.variant and isinstance(raw.get("variants"), dict):
        raw = {**raw, "variants": {**raw["variants"], VARIANT: {}}}  # each variant of the table is spelled
    return manifest.reads(decl, task, variant if binding.variant else None, binding.overrides, raw)


def params_entries(binding: DvcStage, params: Params, raw: dict[str, Any]) -> list[str]:
    """The stage's ``params:`` list as dvc.yaml spells it (``${item}`` templates: see the module doc)."""
    tasks = stage_tasks(binding, params)
    if not binding.per_task:
        return [_template(e, binding, None) for e in run_reads(binding, tasks[0] if tasks else None, raw)]
    per_task = {t: [_template(e, binding, t) for e in run_reads(binding, t, raw)] for t in tasks}
    common = [e for e in per_task[tasks[0]] if all(e in v for v in per_task.values())]
    out = list(common)
    for t in tasks:
        own = [e for e in run_reads(binding, t, raw) if _template(e, binding, t) not in common]
        out += [_template(e, binding, None) for e in own]
    return list(dict.fromkeys(out))


def _template(entry: str, binding: DvcStage, task: str | None) -> str:
    """``entry`` with the run's task and variant replaced by the stage's DVC expressions."""
    out = entry.replace(VARIANT, binding.variant or "")
    if task is not None and binding.task is not None:
        parts = out.split(".")
        out = ".".join(binding.task if p == task else p.replace(f"{task}_", f"{binding.task}_", 1)
                       if p.startswith(f"{task}_") else p for p in parts)  # fmt: skip
    return out


def code_deps(binding: DvcStage, params: Params, base: str) -> list[str]:
    """The stage's code deps, relative to the dvc.yaml's dir (``base``: the path from it to the package's
    parent dir, ``""`` or ``".."``)."""
    decl = manifest.get_stage(binding.stage)
    paths = manifest.code_paths(manifest.code_modules(decl, stage_tasks(binding, params)))
    return [f"{base}/{p}" if base else p for p in paths]


def is_code(dep: str, base: str) -> bool:
    """Whether a dvc.yaml dep is code of the package (rewritten from the manifest) rather than data."""
    prefix = f"{base}/{manifest.PACKAGE_DIR.name}" if base else manifest.PACKAGE_DIR.name
    return dep == prefix or dep.startswith(prefix + "/")


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _missing_params(entries: Iterable[str], raw: dict[str, Any], binding: DvcStage) -> list[str]:
    """Entries (templates resolved per task) that the params file lacks: DVC would refuse to run them."""
    missing = []
    for entry in entries:
        for key in _concrete(entry, binding, raw):
            node: Any = raw
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(key)
                    break
                node = node[part]
    return missing


def _concrete(entry: str, binding: DvcStage, raw: dict[str, Any]) -> list[str]:
    keys = [entry]
    if binding.variant and binding.variant in entry:
        keys = [k.replace(binding.variant, v) for k in keys for v in (raw.get("variants") or {})]
    if binding.per_task and binding.task in entry:
        tasks = (raw.get("sweep") or {}).get("tasks") or []
        keys = [k.replace(binding.task, t) for k in keys for t in tasks]  # type: ignore[arg-type]
    return keys


def updated(dvc_file: Path, root: Path) -> tuple[str, str]:
    """``(current text, text with every bound stage's params and code deps from the manifest)``."""
    import yaml as pyyaml

    rel = dvc_file.resolve().relative_to(root.resolve()).as_posix()
    bindings = DVC_FILES.get(rel)
    if bindings is None:
        raise ConfigError(f"{dvc_file}: not one of the pipelines the manifest knows ({', '.join(DVC_FILES)})")
    params_file = dvc_file.parent / "params.yaml"
    params = load_params([params_file])
    raw = pyyaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    base = Path(*[".."] * (len(Path(rel).parts) - 1)).as_posix() if len(Path(rel).parts) > 1 else ""
    text = dvc_file.read_text(encoding="utf-8")
    yaml = _yaml()
    doc = yaml.load(text)
    stages = doc.get("stages") or {}
    for name, binding in bindings.items():
        if name not in stages:
            raise ConfigError(f"{dvc_file}: no stage {name!r} (bound in vlpeft/stages/dvcyaml.py)")
        body = stages[name]["do"] if "do" in stages[name] else stages[name]
        entries = params_entries(binding, params, raw)
        missing = _missing_params(entries, raw, binding)
        if missing:
            raise ConfigError(
                f"{params_file}: stage {name} reads {missing[0]}, which the file does not spell out "
                f"(DVC tracks only keys present in it): add it with its value"
            )
        code = code_deps(binding, params, base)
        data_deps = [d for d in body.get("deps") or [] if not is_code(str(d), base)]
        _replace_list(body, "deps", [*data_deps, *code])
        _replace_list(body, "params", entries)
    out = io.StringIO()
    yaml.dump(doc, out)
    return text, out.getvalue()


def _replace_list(body: Any, key: str, values: list[str]) -> None:
    """Set ``body[key]`` to ``values`` in place (keeping the key's position and comments), or drop an empty
    list."""
    from ruamel.yaml.comments import CommentedSeq

    if not values:
        if key in body:
            del body[key]
        return
    if key in body and isinstance(body[key], CommentedSeq):
        body[key][:] = values
    else:
        body[key] = CommentedSeq(values)


def write_or_check(dvc_files: list[Path], root: Path, check: bool) -> list[Path]:
    """Rewrite (or, with ``check``, only compare) each file; returns the files that were (or would be)
    changed."""
    from vlpeft.io import write_text

    changed = []
    for path in dvc_files:
        before, after = updated(path, root)
        if before != after:
            changed.append(path)
            if not check:
                write_text(path, after)
    return changed
