"""The task-agnostic training loop: AdamW + schedule, accumulation, clipping, DDP, validation, checkpoints.

Batch semantics: ``cfg.batch_size`` is the number of samples per **optimizer step**, summed over processes
and accumulation micro-steps. Each global batch is split into ``world_size × grad_accum`` contiguous
micro-batches, and each micro-batch loss is weighted by its share of the step's loss units (samples, or
supervised tokens for captions), so the gradient is the same mean as one process computing the whole batch
at once: changing the number of GPUs or ``grad_accum`` does not change the optimisation.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from vlpeft.config import TrainConfig, flatten
from vlpeft.errors import TrainingError
from vlpeft.io import atomic_dir, prev_path, remove_orphans, save_tensors, write_json
from vlpeft.tracking.base import Tracker
from vlpeft.train import sampler
from vlpeft.train.batches import Prefetcher, Prepared, epoch_steps, planned_steps
from vlpeft.train.checkpoint import (
    SaveModel,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
)
from vlpeft.train.distributed import DistContext, all_reduce_sum, barrier, device_for
from vlpeft.train.optim import build_optimizer, build_scheduler
from vlpeft.train.state import seed_everything

Batch = dict[str, Any]


class TrainData(Protocol):
    """What the loop needs from a task's training set."""

    def __len__(self) -> int: ...

    def batch(self, indices: list[int]) -> Batch:
        """Collate the samples ``indices`` into a model batch (CPU tensors)."""
        ...

    def units(self, batch: Batch) -> int:
        """How many terms the model's ``.loss`` averages over (samples; supervised tokens for captions)."""
        ...

    # Optional: ``epoch_plan(seed, epoch) -> list[list[int]]``, the epoch's global batches in order, for data
    # that plans its own batches (multi-task); ``cfg.batch_size`` is then not used.


Validate = Callable[[nn.Module], dict[str, float]]
Report = Callable[[int, float], None]


@dataclass
class FitResult:
    """Outcome of :func:`fit`: per-epoch history, the best validation value and where checkpoints are."""

    history: list[dict[str, float]]
    best: float | None
    best_epoch: int | None
    global_step: int
    last_dir: Path
    best_dir: Path
    resumed_from: dict[str, int] | None = None
    samples_per_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# Settings that do not change the optimisation: they may differ between a run and its resumption.
RESUMABLE_CHANGES = ("checkpoint_every", "num_workers", "test_checkpoint")


def clear_run(out_dir: Path, extra: tuple[Path, ...] = ()) -> None:
    """Remove the checkpoints, curves (and the ``extra`` files) an earlier run left in ``out_dir``, and what
    interrupted checkpoint writes left beside them."""
    import shutil

    for name in ("best", "last"):
        remove_orphans(out_dir / name, sole_writer=True)
        shutil.rmtree(out_dir / name, ignore_errors=True)
        shutil.rmtree(prev_path(out_dir / name), ignore_errors=True)
    for path in (out_dir / "curves.json", *extra):
        Path(path).unlink(missing_ok=True)


def run_fingerprint(cfg: TrainConfig, n: int) -> dict[str, Any]:
    """What must be equal for a resumed run to continue the same optimisation."""
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}
    # Not the world size: a global batch means the same on any number of processes.
    return {"config": settings, "train_samples": n}


def _check_same_run(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    flat_saved, flat_now = flatten(saved), flatten(now)
    for key in sorted(set(flat_saved) | set(flat_now)):
        if flat_saved.get(key) != flat_now.get(key):
            raise TrainingError(
                f"{path}: cannot resume: {key} was {flat_saved.get(key)!r}, now {flat_now.get(key)!r} "
                "(resume with the original params, or train again without --resume)"
            )


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    # bf16 autocast only on CUDA: on CPU it is slow and would break bitwise reproducibility.
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _improved(value: float, best: float | None, greater_is_better: bool) -> bool:
    if best is None:
        return True
    return value > best if greater_is_better else value < best


def _save_best(path: Path, model: nn.Module, save_model: SaveModel | None) -> None:
    def fill(tmp: Path) -> None:
        if save_model is not None:
            save_model(model, tmp)
        else:
            save_tensors(trainable_state(model), tmp / "weights.safetensors")

    with atomic_dir(path) as tmp:
        fill(tmp)


def fit(
    model: nn.Module,
    data: TrainData,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    validate: Validate,
    greater_is_better: bool = True,
    tracker: Tracker | None = None,
    report: Report | None = None,
    resume: bool = False,
    save_model: SaveModel | None = None,
    ctx: DistContext | None = None,
    device: torch.device | None = None,
    on_step: Callable[[int], None] | None = None,
    log_every: int = 10,
    progress: bool = True,
    stale: tuple[Path, ...] = (),
) -> FitResult:
    """Train ``model`` on ``data``; validate each epoch; checkpoint to ``out_dir/last`` and ``out_dir/best``.

    ``validate(model)`` runs on rank 0 with the model in eval mode and returns at least ``val_metric`` (and
    usually ``val_loss``); the best checkpoint follows ``val_metric``. ``report(epoch, val_metric)`` is called
    after each validation, once the epoch's checkpoints are written; its exceptions propagate (the sweep
    prunes this way). With ``resume`` the loop continues from ``out_dir/last`` exactly where it stopped: same
    data position, optimizer, scheduler and RNG states, so the result is bitwise that of an uninterrupted run
    on CPU. A non-finite loss or gradient raises :class:`TrainingError` before the optimizer step, leaving the
    last good checkpoint untouched.

    Nothing in ``out_dir`` changes until the run is known to start (a refused ``resume`` or bad input
    leaves an earlier run's outputs alone); then an earlier run's checkpoints, curves and the ``stale`` files
    (results the caller writes after training) are removed, and the tracking run of the run being resumed,
    still ``RUNNING`` after a kill, is ended as ``KILLED`` and linked to the new one.
    """
    ctx = ctx or DistContext()
    device = device or device_for(ctx)
    out_dir = Path(out_dir)
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    n = len(data)
    if n == 0:
        raise TrainingError("the training set is empty")
    # A data set may plan its own batches (multi-task: each step one task's batch, per-task sizes); the plan
    # of every epoch is a pure function of (seed, epoch) with the same number of steps.
    plan_of = getattr(data, "epoch_plan", None)
    steps = len(plan_of(cfg.seed, 0)) if plan_of else sampler.steps_per_epoch(n, cfg.batch_size)
    total_steps = steps * cfg.epochs

    model.to(device)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = build_scheduler(optimizer, total_steps, cfg.warmup_ratio, cfg.schedule)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    seed_everything(cfg.seed)

    state: dict[str, Any] = {
        "epoch": 0,
        "batch": 0,
        "global_step": 0,
        "epoch_loss_sum": 0.0,
        "epoch_units": 0.0,
        "epoch_samples": 0,
        "history": [],
        "best": None,
        "best_epoch": None,
        "run": run_fingerprint(cfg, n),
    }
    resumed_from = None
    found = find_checkpoint(last_dir) if resume else None
    if found is not None:  # refused (unreadable, another run's) before anything on disk changes
        loaded = load_checkpoint(found, model, optimizer, scheduler)
        _check_same_run(found, loaded.get("run", {}), state["run"])
        state.update(loaded)
        resumed_from = {"epoch": state["epoch"], "batch": state["batch"], "global_step": state["global_step"]}
    if ctx.is_main:  # everything is validated: the run really starts here
        if found is None:
            # A fresh run owns out_dir: nothing of an older run may pass for this one's.
            clear_run(out_dir, stale)
        else:
            for path in (last_dir, best_dir):
                remove_orphans(path, sole_writer=True)
            for path in stale:
                Path(path).unlink(missing_ok=True)
            tqdm.write(f"resuming from {found}: epoch {state['epoch'] + 1}, batch {state['batch']}")
        _supersede_run(tracker, state.get("tracking_run_id"))
        state["tracking_run_id"] = getattr(tracker, "run_id", None)
    barrier(ctx)

    train_model: nn.Module = model
    if ctx.enabled:
        # Unused parameters happen (e.g. a blind model never touches its visual projection).
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    def checkpoint() -> None:
        if ctx.is_main:
            save_checkpoint(last_dir, model, optimizer, scheduler, state, save_model)

    progress_on = None if (progress and ctx.is_main) else True  # tqdm: None = only on a terminal
    rate_samples, rate_time = 0, 0.0
    model.train()
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        start = state["batch"]
        if plan_of is not None:
            items = planned_steps(
                data, plan_of(cfg.seed, epoch), start, ctx.world_size, ctx.rank, cfg.grad_accum
            )
        else:
            order = sampler.epoch_order(n, cfg.seed, epoch)
            items = epoch_steps(
                data, order, cfg.batch_size, start, steps, ctx.world_size, ctx.rank, cfg.grad_accum
            )
        bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=progress_on,
                   leave=False, dynamic_ncols=True)  # fmt: skip
        t0, seen = time.perf_counter(), 0
        try:
            with Prefetcher(items, cfg.num_workers) as prepared_steps:
                for b, batch_idx, prepared in prepared_steps:
                    loss, units, grad_norm = _step(
                        train_model, prepared, cfg, ctx, device, params, optimizer, scheduler
                    )
                    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                        raise _non_finite(loss, grad_norm, epoch, state["global_step"], last_dir)
                    state["global_step"] += 1
                    state["batch"] = b + 1
                    state["epoch_loss_sum"] += loss * units
                    state["epoch_units"] += units
                    state["epoch_samples"] += len(batch_idx)
                    seen += len(batch_idx)
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.0f}", refresh=False)
                    if tracker is not None and ctx.is_main and state["global_step"] % log_every == 0:
                        lr = optimizer.param_groups[0]["lr"]
                        step_metrics = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm}
                        tracker.log_metrics(step_metrics, step=state["global_step"])
                    every = cfg.checkpoint_every
                    if every and state["global_step"] % every == 0 and b + 1 < steps:
                        checkpoint()
                    if on_step is not None:
                        on_step(state["global_step"])
        finally:
            bar.close()  # also on errors: no stale bar above the error line
        epoch_time = time.perf_counter() - t0
        rate_samples += seen
        rate_time += epoch_time

        record = _end_of_epoch(model, validate, state, ctx)
        if ctx.is_main and _improved(record["val_metric"], state["best"], greater_is_better):
            state["best"], state["best_epoch"] = record["val_metric"], epoch + 1
            _save_best(best_dir, model, save_model)
        state.update(epoch=epoch + 1, batch=0, epoch_loss_sum=0.0, epoch_units=0.0, epoch_samples=0)
        checkpoint()
        if ctx.is_main:
            write_json(out_dir / "curves.json", state["history"])
            if tracker is not None:
                epoch_metrics = {k: v for k, v in record.items() if k != "epoch"}
                epoch_metrics["train/samples_per_s"] = seen / max(epoch_time, 1e-9)
                tracker.log_metrics(epoch_metrics, step=state["global_step"])
            if report is not None:
                report(epoch + 1, record["val_metric"])
        barrier(ctx)
    if ctx.is_main:
        # Again after the loop: a kill between the last checkpoint and its curves write leaves a checkpoint
        # whose resume runs no epoch, and the curves must still list every epoch.
        write_json(out_dir / "curves.json", state["history"])

    return FitResult(
        history=state["history"],
        best=state["best"],
        best_epoch=state["best_epoch"],
        global_step=state["global_step"],
        last_dir=last_dir,
        best_dir=best_dir,
        resumed_from=resumed_from,
        samples_per_s=rate_samples / rate_time if rate_time > 0 else 0.0,
    )


def _supersede_run(tracker: Tracker | None, old_run_id: str | None) -> None:
    """End the tracking run a killed run left open (trackers that can; the NullTracker cannot)."""
    end = getattr(tracker, "end_stale_run", None)
    if old_run_id and end is not None and old_run_id != getattr(tracker, "run_id", None):
        end(old_run_id)


def _non_finite(loss: float, grad_norm: float, epoch: int, done_steps: int, last_dir: Path) -> TrainingError:
    """The one-line error for a NaN/inf loss or gradient (raised before the optimizer step)."""
    what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
    found = find_checkpoint(last_dir)
    kept = f"last good checkpoint kept at {found}" if found else "no checkpoint yet"
    return TrainingError(
        f"{what} became {value} at epoch {epoch + 1}, step {done_steps + 1}; training stopped ({kept}); "
        "try a lower lr"
    )


def _step(
    train_model: nn.Module,
    prepared: Prepared,
    cfg: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[float, float, float]:
    """One optimizer step over this rank's prepared micro-batches; returns (mean loss, units, grad norm)."""
    local_units = sum(u for _, u in prepared)
    (total_units,) = all_reduce_sum([local_units], ctx, device)
    if total_units <= 0:
        raise TrainingError("a training batch has no supervised positions (all labels are padding)")
    local_loss = 0.0
    for i, (b, u) in enumerate(prepared):
        sync = not ctx.enabled or i == len(prepared) - 1
        no_sync = contextlib.nullcontext() if sync else train_model.no_sync()
        with no_sync, _autocast(device, cfg.bf16):
            out = train_model(**_to_device(b, device))
        weight = u / total_units
        # DDP averages gradients over ranks, so scale by world_size to get the sum of weighted shares.
        (out.loss.float() * (weight * ctx.world_size)).backward()
        local_loss += float(out.loss.detach().float()) * weight
    (loss,) = all_reduce_sum([local_loss], ctx, device)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if math.isfinite(loss) and math.isfinite(grad_norm):
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, total_units, grad_norm


def _end_of_epoch(
    model: nn.Module, validate: Validate, state: dict[str, Any], ctx: DistContext
) -> dict[str, float]:
    """Validate on rank 0, append the epoch's record to the history and return it."""
    record: dict[str, float] = {
        "epoch": state["epoch"] + 1,
        "train_loss": state["epoch_loss_sum"] / max(state["epoch_units"], 1e-12),
    }
    if ctx.is_main:
        model.eval()
        with torch.no_grad():
            values = validate(model)
        model.train()
        if "val_metric" not in values:
            raise ValueError("validate() must return a 'val_metric'")
        record.update({k: float(v) for k, v in values.items()})
        state["history"].append(record)
    return record
