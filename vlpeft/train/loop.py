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

from vlpeft.config import TrainConfig
from vlpeft.errors import TrainingError
from vlpeft.io import write_json
from vlpeft.tracking.base import Tracker
from vlpeft.train import sampler
from vlpeft.train.checkpoint import (
    SaveModel,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
    write_dir_atomically,
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
            from safetensors.torch import save_file

            save_file(trainable_state(model), str(tmp / "weights.safetensors"))

    write_dir_atomically(path, fill)


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
) -> FitResult:
    """Train ``model`` on ``data``; validate each epoch; checkpoint to ``out_dir/last`` and ``out_dir/best``.

    ``validate(model)`` runs on rank 0 with the model in eval mode and returns at least ``val_metric`` (and
    usually ``val_loss``); the best checkpoint follows ``val_metric``. ``report(epoch, val_metric)`` is called
    after each validation, once the epoch's checkpoints are written; its exceptions propagate (the sweep
    prunes this way). With ``resume`` the loop continues from ``out_dir/last`` exactly where it stopped: same
    data position, optimizer, scheduler and RNG states, so the result is bitwise that of an uninterrupted run
    on CPU. A non-finite loss or gradient raises :class:`TrainingError` before the optimizer step, leaving the
    last good checkpoint untouched.
    """
    ctx = ctx or DistContext()
    device = device or device_for(ctx)
    out_dir = Path(out_dir)
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    n = len(data)
    if n == 0:
        raise TrainingError("the training set is empty")
    steps = sampler.steps_per_epoch(n, cfg.batch_size)
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
    }
    resumed_from = None
    found = find_checkpoint(last_dir) if resume else None
    if found is not None:
        state.update(load_checkpoint(found, model, optimizer, scheduler))
        resumed_from = {"epoch": state["epoch"], "batch": state["batch"], "global_step": state["global_step"]}
        if ctx.is_main:
            tqdm.write(f"resuming from {found}: epoch {state['epoch'] + 1}, batch {state['batch']}")

    train_model: nn.Module = model
    if ctx.enabled:
        # Unused parameters happen (e.g. a blind model never touches its visual projection).
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    def checkpoint() -> None:
        if ctx.is_main:
            save_checkpoint(last_dir, model, optimizer, scheduler, state, save_model)

    rate_samples, rate_time = 0, 0.0
    model.train()
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        order = sampler.epoch_order(n, cfg.seed, epoch)
        bar = tqdm(
            total=steps,
            initial=state["batch"],
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=None if (progress and ctx.is_main) else True,  # None: only on a terminal
            leave=False,
            dynamic_ncols=True,
        )
        t0, seen0 = time.perf_counter(), 0
        try:
            for b in range(state["batch"], steps):
                batch_idx = sampler.global_batch(order, b, cfg.batch_size)
                loss, units, grad_norm = _step(
                    train_model, data, batch_idx, cfg, ctx, device, params, optimizer, scheduler
                )
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    found_ckpt = find_checkpoint(last_dir)
                    kept = f"last good checkpoint kept at {found_ckpt}" if found_ckpt else "no checkpoint yet"
                    raise TrainingError(
                        f"{what} became {loss if what == 'loss' else grad_norm} at epoch {epoch + 1}, "
                        f"step {state['global_step'] + 1}; training stopped ({kept}); try a lower lr"
                    )
                state["global_step"] += 1
                state["batch"] = b + 1
                state["epoch_loss_sum"] += loss * units
                state["epoch_units"] += units
                state["epoch_samples"] += len(batch_idx)
                seen0 += len(batch_idx)
                elapsed = time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss:.4f}", samples_s=f"{seen0 / max(elapsed, 1e-9):.0f}", refresh=False
                )
                if tracker is not None and ctx.is_main and state["global_step"] % log_every == 0:
                    lr = optimizer.param_groups[0]["lr"]
                    step_metrics = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm}
                    tracker.log_metrics(step_metrics, step=state["global_step"])
                if (
                    cfg.checkpoint_every
                    and state["global_step"] % cfg.checkpoint_every == 0
                    and b + 1 < steps
                ):
                    checkpoint()
                if on_step is not None:
                    on_step(state["global_step"])
        finally:
            bar.close()  # also on errors: no stale bar above the error line
        rate_samples += seen0
        rate_time += time.perf_counter() - t0

        record = _end_of_epoch(model, validate, state, ctx, device)
        if ctx.is_main and _improved(record["val_metric"], state["best"], greater_is_better):
            state["best"], state["best_epoch"] = record["val_metric"], epoch + 1
            _save_best(best_dir, model, save_model)
        state.update(epoch=epoch + 1, batch=0, epoch_loss_sum=0.0, epoch_units=0.0, epoch_samples=0)
        checkpoint()
        if ctx.is_main:
            write_json(out_dir / "curves.json", state["history"])
            if tracker is not None:
                epoch_metrics = {k: v for k, v in record.items() if k != "epoch"}
                tracker.log_metrics(epoch_metrics, step=state["global_step"])
            if report is not None:
                report(epoch + 1, record["val_metric"])
        barrier(ctx)

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


def _step(
    train_model: nn.Module,
    data: TrainData,
    batch_idx: list[int],
    cfg: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[float, float, float]:
    """One optimizer step over one global batch; returns (mean loss, loss units, gradient norm)."""
    micro = sampler.rank_micro_batches(batch_idx, ctx.world_size, ctx.rank, cfg.grad_accum)
    batches: list[tuple[Batch, float]] = []
    for idx in micro:
        if idx:
            b = data.batch(idx)
            batches.append((b, float(data.units(b))))
        elif ctx.enabled:
            # Every DDP rank must run the same number of backward passes: an empty share becomes one
            # real sample with weight 0 (its gradient is exactly zero).
            batches.append((data.batch(batch_idx[:1]), 0.0))
    local_units = sum(u for _, u in batches)
    (total_units,) = all_reduce_sum([local_units], ctx, device)
    if total_units <= 0:
        raise TrainingError("a training batch has no supervised positions (all labels are padding)")
    local_loss = 0.0
    for i, (b, u) in enumerate(batches):
        sync = not ctx.enabled or i == len(batches) - 1
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
    model: nn.Module, validate: Validate, state: dict[str, Any], ctx: DistContext, device: torch.device
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
