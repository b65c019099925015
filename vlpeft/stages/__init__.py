"""One function per pipeline stage: ``(params, input paths, output paths, tracker) -> result``.

The CLI (and through it every ``dvc.yaml`` stage) and the Kubeflow components (``components/``) call these
functions, so a DVC run and a Kubeflow run of the same params do the same work and give the same numbers.
They are the only code that joins parameter values with paths; they hold no argument parsing and no
Kubeflow code.

One module per stage group, each with its ``STAGE`` declaration of what it reads (params keys, code):
``datasets`` (data), ``backbones`` (pretrain), ``featurestore`` (features), ``search`` (sweep),
``training`` (train, evaluate), ``reports`` (summary), ``registry`` (register, review). ``manifest``
collects the declarations; ``dvc.yaml``'s ``params:`` and code ``deps:`` are written from it
(``vlpeft dvc-yaml``) and the Kubeflow components are listed from it. Modules are named apart from their
stage functions so that ``vlpeft.stages.train`` stays the function.
"""

from vlpeft.stages.backbones import pretrain
from vlpeft.stages.common import (
    BACKBONE_FIELDS,
    PRETRAIN_DIR,
    check_task,
    localize_backbones,
    log_results,
    stage_tracker,
    uses_pretrain,
)
from vlpeft.stages.datasets import data, synth
from vlpeft.stages.featurestore import features, load_encoder
from vlpeft.stages.registry import (
    register,
    registered_name,
    relocated_model,
    review,
    selected_run,
    test_model_dir,
)
from vlpeft.stages.reports import add_run, summary
from vlpeft.stages.search import sweep, sweep_finish, sweep_prepare, sweep_worker
from vlpeft.stages.training import evaluate, ground_truth, train

__all__ = [
    "BACKBONE_FIELDS",
    "PRETRAIN_DIR",
    "add_run",
    "check_task",
    "data",
    "evaluate",
    "features",
    "ground_truth",
    "load_encoder",
    "localize_backbones",
    "log_results",
    "pretrain",
    "register",
    "registered_name",
    "relocated_model",
    "review",
    "selected_run",
    "stage_tracker",
    "summary",
    "sweep",
    "sweep_finish",
    "sweep_prepare",
    "sweep_worker",
    "synth",
    "test_model_dir",
    "train",
    "uses_pretrain",
]
