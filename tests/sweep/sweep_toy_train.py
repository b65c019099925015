"""A cheap but real train function with the "Trainer" contract's signature, for the sweep machinery tests.

Pure Python: it sleeps a little per epoch and reports a deterministic validation curve that depends on the
routing type and rank, so the sweep's storage, workers, pruning, retries and outputs run for real without
torch. Knobs (environment, read in the worker process):
``VLPEFT_TOY_SLEEP`` seconds per epoch; ``VLPEFT_TOY_FAIL_ROUTING`` a routing type whose trials raise;
``VLPEFT_TOY_DIE_ONCE`` a marker path: the first trial that finds it missing creates it and kills its own
worker process (SIGKILL) in the middle of training.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

TOY = "sweep_toy_train:train"  # how workers import it (tests/sweep is on their PYTHONPATH)
BASE = {"none": 0.50, "add": 0.55, "mul": 0.60, "mul_expand": 0.58, "vl": 0.66, "vl_relu": 0.62}


def final_score(routing: str, rank: int, seed: int) -> float:
    """The value a full toy training run reaches (pure function the tests can check against)."""
    return BASE[routing] + 0.01 * rank + 0.001 * (seed % 7)


def train(params, task, data_root, features_dir, out_dir, tracker=None, resume=False, report=None):
    cfg = params.task(task)
    final = final_score(cfg.peft.routing, cfg.peft.rank, cfg.seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "trained.txt").write_text(f"{cfg.peft.routing} {cfg.peft.rank} {cfg.lr}\n")
    sleep = float(os.environ.get("VLPEFT_TOY_SLEEP", "0.05"))
    value = 0.0
    for epoch in range(cfg.epochs):
        time.sleep(sleep)
        marker = os.environ.get("VLPEFT_TOY_DIE_ONCE")
        if marker and epoch == 1:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        value = final * (1 - 0.5 ** (epoch + 1))
        if tracker is not None:
            tracker.log_metrics({"toy_loss": 1.0 - value}, step=epoch)
        if report is not None:
            report(epoch, value)
    if os.environ.get("VLPEFT_TOY_FAIL_ROUTING") == cfg.peft.routing:
        raise RuntimeError(f"toy failure for routing {cfg.peft.routing}")
    return {"val_score": value, "epochs": cfg.epochs}
