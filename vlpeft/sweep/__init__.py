"""Optuna sweeps over rank and routing type (and method / learning rate), from one laptop to many workers.

- ``run.run_sweep``: create the study and its queue of trial slots, run worker processes, write the outputs;
- ``worker``: a worker process (``python -m vlpeft.sweep.worker SPEC.json``) running queued trials through
  the injected train function;
- ``best.merge_best_params``: merge a sweep's ``best_params.json`` over ``Params`` (used by ``train``).

Importing this package is cheap: Optuna and MLflow are imported by the submodules that need them.
"""

from vlpeft.sweep.best import load_best_params, merge_best_params

__all__ = ["load_best_params", "merge_best_params"]
