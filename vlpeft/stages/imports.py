"""The code a stage runs, from the names its modules import and use (read with ``ast``; nothing is imported).

The unit is a module's top-level function or class (or a whole module where one is used as a whole). A
stage's code is the closure of its entry units under these rules:

- using a unit runs its module's top level (the module is *loaded*), and the top level of every parent
  package first; loading runs everything the top level references (``PeftConfig = _peft_config_class()``,
  class bodies, decorators, defaults);
- a function or class brings in every name its body references: the module's own functions and classes,
  names bound by imports at the top or inside the function (``from vlpeft.train.run import train_task`` ->
  that function), attribute chains on an imported module (``stages.train`` -> ``vlpeft.stages``' ``train``);
- a name a package re-exports resolves to where it is defined, through ``from x import y`` or the package's
  PEP 562 table (a top-level ``{"name": "vlpeft.module"}`` dict of strings); an unresolvable name is an error;
- ``importlib.import_module("a.b")`` loads ``a.b``; ``importlib.import_module(f"a.b.{x}")`` every
  subpackage of ``a.b`` (how ``vlpeft.tuners`` registers its method packages);
- ``if TYPE_CHECKING:`` blocks never run and are skipped.

What runs by name at run time (``"module:function"`` strings of the task and method tables, a subprocess's
``-m`` module) is invisible here: stage declarations name those entries (``vlpeft.stages.declare``). Only
modules of the ``vlpeft`` package are followed; third-party code is pinned by the lock file.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "vlpeft"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../vlpeft

Unit = tuple[str, str | None]  # (module, top-level name) or (module, None) = the whole module


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (``vlpeft.a.b``): ``a/b.py`` or ``a/b/__init__.py``; else None."""
    parts = name.split(".")
    if parts[0] != PACKAGE or not all(p.isidentifier() for p in parts):
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    if len(parts) > 1 and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return base / "__init__.py" if (base / "__init__.py").is_file() else None


def parents(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name``: ``vlpeft``, ``vlpeft.a`` for ``vlpeft.a.b``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# A binding: ("module", target) for a name bound to a module; ("attr", module, name) for a name imported from
# a module; ("own", name) for the module's own function, class or value.
Binding = tuple[str, ...]


@dataclass
class ModuleInfo:
    """What one module binds and references: at its top level and inside each top-level function/class."""

    name: str
    bindings: dict[str, Binding] = field(default_factory=dict)
    lazy: dict[str, str] = field(default_factory=dict)
    top_refs: set[tuple[str, ...]] = field(default_factory=set)
    top_scope: dict[str, Binding] = field(default_factory=dict)
    unit_refs: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    unit_scopes: dict[str, dict[str, Binding]] = field(default_factory=dict)
    loads: set[str] = field(default_factory=set)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_bindings(node: ast.Import | ast.ImportFrom, package: str) -> dict[str, Binding]:
    """The names an import statement binds."""
    out: dict[str, Binding] = {}
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                out[alias.asname] = ("module", alias.name)
            else:
                top = alias.name.split(".")[0]
                out[top] = ("module", top)
        return out
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join([*base, *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    for alias in node.names:
        if alias.name == "*":
            continue
        sub = f"{module}.{alias.name}"
        bound = ("module", sub) if module_file(sub) else ("attr", module, alias.name)
        out[alias.asname or alias.name] = bound
    return out


class _Refs(ast.NodeVisitor):
    """References (names and attribute chains), imports bound, and modules loaded by ``import_module``."""

    def __init__(self, package: str, skip_function_bodies: bool) -> None:
        self.package = package
        self.skip_bodies = skip_function_bodies
        self.refs: set[tuple[str, ...]] = set()
        self.scope: dict[str, Binding] = {}
        self.loads: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self.visit(expr)
        if not self.skip_bodies:
            for stmt in node.body:
                self.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.body)

    def visit_Import(self, node: ast.Import) -> None:
        self.scope.update(_import_bindings(node, self.package))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.scope.update(_import_bindings(node, self.package))

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.refs.add((node.id,))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: list[str] = []
        value: ast.expr = node
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name):
            self.refs.add((value.id, *reversed(chain)))
        else:
            self.visit(value)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self.loads.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
                if prefix.endswith(".") and len(arg.values) == 2:
                    self.loads.update(_subpackages(prefix[:-1]))
        self.generic_visit(node)


def _subpackages(name: str) -> list[str]:
    path = module_file(name)
    if path is None or path.name != "__init__.py":
        return []
    return sorted(f"{name}.{d.name}" for d in path.parent.iterdir() if (d / "__init__.py").is_file())


def _lazy_table(tree: ast.Module) -> dict[str, str]:
    """A PEP 562 table: a top-level dict literal of ``{"name": "vlpeft.module"}`` strings."""
    table: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            pairs = [
                (k.value, v.value)
                for k, v in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            ]
            if (
                pairs
                and len(pairs) == len(node.value.keys)
                and all(isinstance(v, str) and v.startswith(PACKAGE + ".") for _, v in pairs)
            ):
                table.update(pairs)
    return table


@functools.cache
def module_info(name: str) -> ModuleInfo:
    """Bindings and references of module ``name``."""
    path = module_file(name)
    if path is None:
        raise ValueError(f"{name}: not a module of {PACKAGE}")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    info = ModuleInfo(name, lazy=_lazy_table(tree))
    top = _Refs(package, skip_function_bodies=True)
    for node in tree.body:
        top.visit(node)  # imports, class bodies, decorators, defaults, module statements
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            info.bindings[node.name] = ("own", node.name)
            inner = _Refs(package, skip_function_bodies=False)
            body = node.body
            for stmt in body:
                inner.visit(stmt)
            info.unit_refs[node.name] = inner.refs
            info.unit_scopes[node.name] = inner.scope
            info.loads |= inner.loads
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        info.bindings.setdefault(sub.id, ("own", sub.id))
    info.bindings.update(top.scope)
    info.top_scope = top.scope
    info.top_refs = top.refs
    info.loads |= top.loads
    return info


def _resolve(ref: tuple[str, ...], scope: dict[str, Binding], info: ModuleInfo, where: str) -> list[Unit]:
    """The units one reference names (empty for locals, builtins and third-party names)."""
    binding = scope.get(ref[0]) or info.bindings.get(ref[0])
    if binding is None:
        return []
    if binding[0] == "own":
        return [(info.name, binding[1])]
    if binding[0] == "attr":
        module, attr = binding[1], binding[2]
        if module.split(".")[0] != PACKAGE:
            return []
        return [(module, attr)]
    module = binding[1]
    if module.split(".")[0] != PACKAGE:
        return []
    for attr in ref[1:]:
        if module_file(f"{module}.{attr}"):
            module = f"{module}.{attr}"
            continue
        return [(module, attr)]
    return [(module, None)]


def _loaded_by(scope: dict[str, Binding]) -> list[Unit]:
    """The top levels that import statements run (whether or not the bound names are used)."""
    return [(b[1], "") for b in scope.values() if b[0] != "own" and b[1].split(".")[0] == PACKAGE]


def _expand(unit: Unit) -> list[Unit]:
    """The units that using ``unit`` brings in (its module loaded, then what its body references)."""
    module, name = unit
    if module_file(module) is None:
        raise ValueError(f"{module}: not a module of {PACKAGE}")
    info = module_info(module)
    if name is None:
        return [(module, n) for n in info.unit_refs] + [(m, "") for m in [module]]
    if name == "":  # the module's top level: parents, top-level references, import_module loads
        out: list[Unit] = [(p, "") for p in parents(module)]
        for ref in info.top_refs:
            out += _resolve(ref, {}, info, module)
        out += [(m, "") for m in info.loads]
        return out + _loaded_by(info.top_scope)
    out = [(module, "")]
    if name in info.unit_refs:
        scope = info.unit_scopes[name]
        out += _loaded_by(scope)
        for ref in info.unit_refs[name]:
            out += _resolve(ref, scope, info, module)
        return out
    binding = info.bindings.get(name)
    if binding is not None and binding[0] != "own":
        return out + _resolve((name,), {}, info, module)
    if name in info.lazy:
        return [*out, (info.lazy[name], name)]
    if binding is None and module_file(f"{module}.{name}") is None and not name.startswith("__"):
        raise ValueError(f"{module_file(module)}: has no name {name!r} (imported or used elsewhere)")
    return out


def closure(entries: list[Unit] | tuple[Unit, ...]) -> set[str]:
    """Every ``vlpeft`` module whose code runs when the ``entries`` are used."""
    seen: set[Unit] = set()
    todo = list(entries)
    while todo:
        unit = todo.pop()
        if unit in seen:
            continue
        seen.add(unit)
        todo.extend(u for u in _expand(unit) if u not in seen)
    return {module for module, _ in seen}


def entry_unit(reference: str) -> Unit:
    """``"module:name"`` -> that unit; ``"module"`` -> the whole module."""
    module, _, name = reference.partition(":")
    return (module, name or None)
