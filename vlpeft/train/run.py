"""``train_task``: one task trained end to end (contract "Trainer"), as the CLI, DVC and the sweep call it.

Writes under ``out_dir``::

    best/  last/             ``save_vl_model`` dirs (+ ``answers.json`` for VQA, ``vlpeft_train.json``);
                             ``last/trainer/`` also holds the resumable training state
    curves.json              per-epoch [{epoch, train_loss, val_loss, val_metric, ...}] (DVC plots)
    predictions_test.json    test predictions, official format (VQA [{question_id, answer}], COCO
                             [{image_id, caption}])
    shuffled-images/         the same test files with every image swapped for another (the control of
                             ``vlpeft.train.controls``; not for the blind model, which sees no image)
    metrics.json             {"task", "test": official metrics, "test_shuffled": the same with shuffled
                             images, "val", "train", "model"} (DVC metrics); written last, only after a
                             successful run

A run never damages the previous one before it has finished: every input it will read (training data,
features with their shard headers, the test split and its official ground truth) is checked first; then it
takes the lock of ``out_dir`` (a second training into the same directory is refused), builds its results in
``.<out>.partial`` beside it and swaps them in only once complete (``vlpeft.io.publish_partial``). Until
then the earlier run stays whole at ``out_dir``; ``--resume`` continues an unfinished ``.partial`` build.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from vlpeft.config import Params, flatten, params_to_dict
from vlpeft.io import MARKER, exclusive_output, partial_path, publish_partial, write_json
from vlpeft.tasks import get_task
from vlpeft.tracking.base import Tracker
from vlpeft.tracking.names import stage_params
from vlpeft.train.loop import Report, fit
from vlpeft.tuners.registry import get_method

METRICS = "metrics.json"
CURVES = "curves.json"
PREDICTIONS = "predictions_test.json"


def build_task(params: Params, task: str, data_root: Path, features_dir: Path | None) -> Any:
    """Load the data, build the model (seeded), return the task binding of ``task`` (see ``vlpeft.tasks``)."""
    return get_task(task).build_binding(params, Path(data_root), features_dir)


def run_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume`` of a run into ``out_dir`` continues from: the unfinished build's
    (``.<out>.partial/last``), else the finished run's (``out_dir/last``), else None."""
    from vlpeft.train.checkpoint import find_checkpoint

    out_dir = Path(out_dir)
    return find_checkpoint(partial_path(out_dir) / "last") or find_checkpoint(out_dir / "last")


def _prepare_build(out_dir: Path, resume: bool) -> Path:
    """The directory this run builds in: the unfinished build when resuming one, a copy of the finished run
    when resuming that, else a fresh empty one (an abandoned build is discarded)."""
    from vlpeft.train.checkpoint import find_checkpoint

    work = partial_path(out_dir)
    if resume and find_checkpoint(work / "last") is not None:
        return work
    shutil.rmtree(work, ignore_errors=True)
    if resume and find_checkpoint(out_dir / "last") is not None:
        shutil.copytree(out_dir, work, symlinks=True)
        (work / MARKER).unlink(missing_ok=True)
        return work
    work.mkdir(parents=True)
    return work


def train_task(
    params: Params,
    task: str,
    data_root: str | Path,
    features_dir: str | Path | None,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    resume: bool = False,
    report: Report | None = None,
    *,
    evaluate_test: bool = True,
    progress: bool = True,
    headline_out: str | Path | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Train ``task`` (a name of ``vlpeft.tasks.TASKS``) with its params section; see the module docstring.

    Validation runs each epoch and ``report(epoch, val_metric)`` follows it (exceptions propagate). After
    training, the test split is scored with the ``test_checkpoint`` model (reloaded from disk) unless
    ``evaluate_test`` is False; ``headline_out`` also gets the flat headline test figures
    (``vlpeft.eval.compare.headline_metrics``: what DVC declares as metrics; the breakdowns stay in
    ``metrics.json``). Under ``torchrun`` every rank trains and only rank 0 writes and evaluates.
    Returns the metrics flattened to dotted keys (``test.overall``, ``val.best``, ...); ``{}`` on other ranks.
    """
    import torch.distributed as dist

    from vlpeft.train.distributed import barrier, device_for, init_distributed

    cfg = params.task(task)
    out_dir = Path(out_dir)
    owns_group = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed()
    device = device_for(ctx)
    binding = build_task(params, task, Path(data_root), Path(features_dir) if features_dir else None)
    check_inputs = getattr(binding, "check_inputs", None)
    if check_inputs is not None:  # a broken test file or feature shard is refused now, not after training
        check_inputs(test=evaluate_test)
    with exclusive_output(out_dir, "training") if ctx.is_main else contextlib.nullcontext():
        work = _prepare_build(out_dir, resume) if ctx.is_main else partial_path(out_dir)
        barrier(ctx)  # other ranks read the checkpoint rank 0 prepared
        return _train_into(params, task, binding, cfg, ctx, device, out_dir, work, tracker=tracker,
                           resume=resume, report=report, evaluate_test=evaluate_test, progress=progress,
                           headline_out=headline_out, variant=variant, owns_group=owns_group)  # fmt: skip


def _train_into(
    params: Params,
    task: str,
    binding: Any,
    cfg: Any,
    ctx: Any,
    device: Any,
    out_dir: Path,
    work: Path,
    *,
    tracker: Tracker | None,
    resume: bool,
    report: Report | None,
    evaluate_test: bool,
    progress: bool,
    headline_out: str | Path | None,
    variant: str | None,
    owns_group: bool,
) -> dict[str, Any]:
    """``train_task`` after its input checks, ``out_dir`` locked: train in ``work``, score, publish."""
    import torch
    import torch.distributed as dist

    from vlpeft.models import load_vl_model, param_report, save_vl_model
    from vlpeft.train.distributed import barrier

    model = binding.model

    def save_model(m: Any, path: Path) -> None:
        save_vl_model(m, path)
        binding.save_extra(path)

    counts = param_report(model)
    if tracker is not None and ctx.is_main:
        # what train reads (the tracker flattens); open_tracker logged the same, a caller's tracker may not
        tracker.log_params(stage_params(params_to_dict(params), f"train@{task}"))
        tracker.set_tags({"task": task, "routing": cfg.peft.routing, "peft.method": cfg.peft.method})
        tracker.log_metrics({"params/trainable": counts["trainable"], "params/percent": counts["percent"]})

    result = fit(
        model,
        binding,
        cfg,
        work,
        validate=binding.validate,
        greater_is_better=binding.greater_is_better,
        tracker=tracker,
        report=report,
        resume=resume,
        save_model=save_model,
        ctx=ctx,
        device=device,
        progress=progress,
        # Results of a resumed build are recomputed (the earlier run's stay at out_dir until the swap).
        stale=(work / METRICS, work / PREDICTIONS),
    )
    barrier(ctx)
    if ctx.enabled and owns_group:
        dist.destroy_process_group()  # the test evaluation below is rank 0's alone
    if not ctx.is_main:
        return {}

    metrics: dict[str, Any] = {
        "task": task,
        "variant": variant,  # the params variants entry this run trained (None: params as given)
        "val": {
            "metric": binding.metric_name,
            "best": result.best,
            "best_epoch": result.best_epoch,
            "last": result.history[-1]["val_metric"] if result.history else None,
        },
        "train": {
            "epochs": cfg.epochs,
            "lr": cfg.lr,
            "steps": result.global_step,
            "samples": len(binding),
            "samples_per_s": round(result.samples_per_s, 2),
            "final_loss": result.history[-1]["train_loss"] if result.history else None,
        },
        "model": {
            **{k: counts[k] for k in ("trainable", "total", "percent")},
            # What was trained, so reports and registries need not open the checkpoint.
            "method": cfg.peft.method,
            "routing": cfg.peft.routing,
            "sharing": getattr(cfg.peft, "sharing", None),  # across tasks (adapter family, LoRA)
            "rank": cfg.peft.rank if get_method(cfg.peft.method).ranked else None,
            "visual_prefix": params.model.visual_prefix,
            "seed": cfg.seed,
        },
    }
    if evaluate_test:
        chosen = result.best_dir if cfg.test_checkpoint == "best" else result.last_dir
        test_model = load_vl_model(chosen, device=device)
        with torch.no_grad():
            metrics["test"] = binding.test(test_model, work)
            if test_model.uses_visual:  # the image-shuffled control (vlpeft.train.controls)
                from vlpeft.train.controls import shuffled_test

                metrics["test_shuffled"] = shuffled_test(binding, test_model, work, cfg.seed)
        metrics["test_checkpoint"] = cfg.test_checkpoint
    write_json(work / METRICS, metrics)
    publish_partial(out_dir)  # the new run replaces the earlier one whole, only now
    if headline_out is not None and "test" in metrics:
        from vlpeft.eval.compare import headline_metrics

        write_json(headline_out, headline_metrics(task, metrics["test"]))
    flat = flatten(metrics)
    if tracker is not None:
        tracker.log_metrics({k: float(v) for k, v in flat.items() if _is_number(v)})
        for name in (METRICS, CURVES, PREDICTIONS):
            if (out_dir / name).is_file():
                tracker.log_artifact(out_dir / name)
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
