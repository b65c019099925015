"""The declaration each stage module makes of what its stage reads: params keys and code.

A leaf (it imports nothing of ``vlpeft``), so every stage module can declare itself at import time and the
manifest (``vlpeft.stages.manifest``) can collect the declarations without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass

# Tables a stage dispatches through by name (``importlib`` at run time, invisible to an import walk): the
# manifest adds the modules each entry names to the stage's code.
DISPATCH_TABLES = ("tasks", "methods")


@dataclass(frozen=True)
class StageDecl:
    """What one pipeline stage reads.

    ``name``: the stage (``dvc.yaml`` stage, Kubeflow component group). ``module``: the stage module;
    ``functions``: its stage functions, the ones an orchestrator calls (a Kubeflow component each).
    ``cli``: the ``vlpeft`` command module dvc.yaml runs it through.

    ``reads``: the params keys or whole sections the stage reads. Placeholders: ``{task}`` is the task the
    stage runs (its section, ``vqa``), ``{variant}`` the final variant (``variants.{variant}``). Fields
    marked execution-only in ``vlpeft.config`` (threads, heartbeats, the sweep's storage URL...) are never
    read by any stage, whatever section they sit in.

    ``ignores``: keys under ``reads`` that this stage never reads because its own code overrides them; each
    tuple is defined beside the code that does the overriding (e.g. ``vlpeft.sweep.space.TRIAL_OVERRIDES``).

    ``entry``: further modules whose code the stage runs without importing them (a subprocess's ``-m``
    module, a ``"module:function"`` string). ``dispatch``: the tables (``DISPATCH_TABLES``) the stage
    calls into by name: their entries' modules are part of the stage's code.
    """

    name: str
    module: str
    cli: str
    reads: tuple[str, ...]
    functions: tuple[str, ...] = ()
    ignores: tuple[str, ...] = ()
    entry: tuple[str, ...] = ()
    dispatch: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.dispatch) - set(DISPATCH_TABLES)
        if unknown:
            raise ValueError(f"stage {self.name}: unknown dispatch tables {sorted(unknown)}")
