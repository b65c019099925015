"""The task-agnostic loop on a small real model: schedule, optimizer, accumulation, resume, NaN, report."""

from __future__ import annotations

import json
import math
import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from toy_trainer import ToyData, ToyModel, build_model, config, make_validate

from vlpeft.errors import TrainingError
from vlpeft.io import MARKER, atomic_dir
from vlpeft.tracking.base import NullTracker
from vlpeft.train import sampler
from vlpeft.train.checkpoint import find_checkpoint
from vlpeft.train.loop import fit
from vlpeft.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from vlpeft.train.state import (
    capture_rng,
    flatten_optimizer_state,
    restore_rng,
    unflatten_optimizer_state,
)


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "trainer" / "weights.safetensors"))


def test_lr_schedule_closed_form():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.0)
    sched = build_scheduler(opt, total_steps=10, warmup_ratio=0.2, schedule="linear")
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_param_groups_skip_frozen_and_no_decay_on_bias_and_norm():
    model = ToyModel()
    groups = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert decayed == {"body.0.weight", "body.4.weight"}
    assert plain == {"body.0.bias", "body.1.weight", "body.1.bias", "body.4.bias"}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert not any(n.startswith("frozen") for n in decayed | plain)


def test_sampler_order_and_shards():
    assert sampler.epoch_order(10, 1, 0) == sampler.epoch_order(10, 1, 0)
    assert sampler.epoch_order(10, 1, 0) != sampler.epoch_order(10, 1, 1)
    batch = list(range(7))
    shards = [sampler.rank_micro_batches(batch, 2, r, 2) for r in range(2)]
    assert shards == [[[0, 1], [2, 3]], [[4, 5], [6]]]
    assert sampler.split_even([1], 3) == [[1], [], []]
    assert sampler.subset_indices(10, 4, 0) == sorted(sampler.subset_indices(10, 4, 0))
    assert len(set(sampler.subset_indices(10, 4, 0))) == 4


def test_optimizer_and_rng_state_roundtrip_bitwise():
    model = ToyModel()
    opt = build_optimizer(model, 1e-2, 0.01)
    model(**ToyData().batch(list(range(8)))).loss.backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    back = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    orig = opt.state_dict()
    assert back["param_groups"] == json.loads(json.dumps(orig["param_groups"]))
    for pid, entry in orig["state"].items():
        for k, v in entry.items():
            assert torch.equal(back["state"][pid][k], v)

    rng_t, rng_m = capture_rng()
    rng_m = json.loads(json.dumps(rng_m))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(rng_t, rng_m)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_training_learns_and_writes_curves(tmp_path):
    tracker = NullTracker()
    reports = []
    res = fit(
        build_model(),
        ToyData(),
        config(epochs=4),
        tmp_path,
        validate=make_validate(),
        tracker=tracker,
        report=lambda e, v: reports.append((e, v)),
        progress=False,
        log_every=1,
    )
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert [c["epoch"] for c in curves] == [1, 2, 3, 4]
    assert set(curves[0]) >= {"epoch", "train_loss", "val_loss", "val_metric"}
    assert curves[-1]["train_loss"] < curves[0]["train_loss"]
    assert reports == [(c["epoch"], c["val_metric"]) for c in curves]
    assert res.best == max(c["val_metric"] for c in curves)
    assert res.global_step == 4 * 7  # ceil(50 / 8) steps per epoch, last batch not dropped
    assert (tmp_path / "best" / "weights.safetensors").is_file()
    assert any("train/loss" in m for _, m in tracker.metrics)
    state = json.loads((tmp_path / "last" / "trainer" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["global_step"]) == (4, 0, 28)


def test_frozen_parameters_stay_frozen(tmp_path):
    model = build_model()
    before = model.frozen.weight.clone()
    fit(model, ToyData(), config(epochs=1), tmp_path, validate=make_validate(), progress=False)
    assert torch.equal(model.frozen.weight, before)
    assert set(weights(tmp_path / "last")) == {n for n, p in model.named_parameters() if p.requires_grad}


class Crash(Exception):
    pass


def test_resume_after_crash_is_bitwise_identical(tmp_path):
    """In-process crash (exception mid-epoch) then resume == uninterrupted run, to the bit (dropout on)."""
    cfg = config(checkpoint_every=2)
    full = fit(build_model(), ToyData(), cfg, tmp_path / "a", validate=make_validate(), progress=False)

    def crash(step: int) -> None:
        if step == 11:  # mid-epoch 2 (7 steps per epoch); last checkpoint at step 10
            raise Crash

    with pytest.raises(Crash):
        fit(
            build_model(),
            ToyData(),
            cfg,
            tmp_path / "b",
            validate=make_validate(),
            on_step=crash,
            progress=False,
        )
    assert json.loads((tmp_path / "b" / "last" / "trainer" / "state.json").read_text())["global_step"] == 10
    # A fresh process rebuilds the model (frozen part from the "backbone"); trainable values must not matter.
    model = build_model()
    torch.manual_seed(77)
    for p in model.body.parameters():
        torch.nn.init.normal_(p)
    resumed = fit(
        model, ToyData(), cfg, tmp_path / "b", validate=make_validate(), resume=True, progress=False
    )
    assert resumed.resumed_from == {"epoch": 1, "batch": 3, "global_step": 10}
    wa, wb = weights(tmp_path / "a" / "last"), weights(tmp_path / "b" / "last")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert full.history == resumed.history
    assert (tmp_path / "a" / "curves.json").read_text() == (tmp_path / "b" / "curves.json").read_text()


def test_resume_of_finished_run_is_a_no_op(tmp_path):
    cfg = config(epochs=1)
    fit(build_model(), ToyData(), cfg, tmp_path, validate=make_validate(), progress=False)
    before = weights(tmp_path / "last")
    res = fit(build_model(), ToyData(), cfg, tmp_path, validate=make_validate(), resume=True, progress=False)
    assert res.global_step == 7 and len(res.history) == 1
    after = weights(tmp_path / "last")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    """batch 8 as 3 uneven micro-batches (3, 3, 2) == batch 8 at once (the loss is a weighted mean)."""
    a = fit(
        build_model(0.0),
        ToyData(),
        config(epochs=1),
        tmp_path / "a",
        validate=make_validate(),
        progress=False,
    )
    b = fit(
        build_model(0.0),
        ToyData(),
        config(epochs=1, grad_accum=3),
        tmp_path / "b",
        validate=make_validate(),
        progress=False,
    )
    wa, wb = weights(tmp_path / "a" / "last"), weights(tmp_path / "b" / "last")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = ToyData(nan_at=None)
    order = sampler.epoch_order(len(data), 5, 0)
    data = ToyData(nan_at=order[8 * 4])  # first sample of the 5th batch of epoch 1
    with pytest.raises(
        TrainingError, match=r"loss became nan at epoch 1, step 5.*last good checkpoint"
    ) as err:
        fit(
            build_model(),
            data,
            config(checkpoint_every=2),
            tmp_path,
            validate=make_validate(),
            progress=False,
        )
    assert "\n" not in str(err.value)
    state = json.loads((tmp_path / "last" / "trainer" / "state.json").read_text())
    assert state["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "last").values())
    assert not (tmp_path / "curves.json").exists()  # no epoch finished: no half-made curves
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temp dirs left behind


def test_report_exception_propagates_after_checkpoint(tmp_path):
    class Pruned(Exception):
        pass

    def report(epoch: int, value: float) -> None:
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        fit(
            build_model(),
            ToyData(),
            config(),
            tmp_path,
            validate=make_validate(),
            report=report,
            progress=False,
        )
    assert len(json.loads((tmp_path / "curves.json").read_text())) == 2
    assert json.loads((tmp_path / "last" / "trainer" / "state.json").read_text())["epoch"] == 2


def test_best_follows_metric_direction(tmp_path):
    losses = iter([3.0, 1.0, 2.0])
    res = fit(
        build_model(),
        ToyData(),
        config(),
        tmp_path,
        validate=lambda m: {"val_metric": next(losses)},
        greater_is_better=False,
        progress=False,
    )
    assert (res.best, res.best_epoch) == (1.0, 2)


def test_atomic_directory_write_keeps_old_copy_on_failure(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "f").write_text("old")

    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "f").write_text("new, half")
        raise RuntimeError("disk full")
    assert (target / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    # A crash between "move old aside" and "rename new in" leaves only .prev: it is still found.
    (target / "trainer").mkdir()
    (target / "trainer" / "state.json").write_text("{}")
    target.rename(tmp_path / ".ckpt.prev")
    assert find_checkpoint(target) == tmp_path / ".ckpt.prev"
    # A checkpoint directory without the completion marker is never taken for one.
    (tmp_path / ".ckpt.prev" / MARKER).unlink()
    assert find_checkpoint(target) is None


def test_orphaned_checkpoint_staging_dirs_go_on_fresh_run_and_on_resume(tmp_path):
    host = socket.gethostname()

    def orphans() -> list[Path]:
        # What a kill during a checkpoint write leaves: a staging dir (here named after a live pid, as a
        # restarted container may reuse one) and one of the naming of earlier versions.
        made = [
            tmp_path / f".last.tmp-{host}-{os.getpid()}.x1",
            tmp_path / ".best.tmpab12",
            tmp_path / ".last.prev",
        ]
        for d in made:
            (d / "trainer").mkdir(parents=True)
        return made

    made = orphans()
    fit(build_model(), ToyData(), config(epochs=1), tmp_path, validate=make_validate(), progress=False)
    assert not any(d.exists() for d in made)
    made = orphans()
    fit(build_model(), ToyData(), config(epochs=1), tmp_path, validate=make_validate(), resume=True,
        progress=False)  # fmt: skip
    assert not any(d.exists() for d in made)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "curves.json", "last"]


def test_prefetch_threads_give_bitwise_identical_training(tmp_path):
    fit(build_model(), ToyData(), config(epochs=2), tmp_path / "a", validate=make_validate(), progress=False)
    fit(build_model(), ToyData(), config(epochs=2, num_workers=2), tmp_path / "b", validate=make_validate(),
        progress=False)  # fmt: skip
    wa, wb = weights(tmp_path / "a" / "last"), weights(tmp_path / "b" / "last")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_prefetcher_order_errors_and_early_close():
    from vlpeft.train.batches import Prefetcher

    assert list(Prefetcher(iter(range(20)), 3)) == list(range(20))

    def failing():
        yield 1
        raise ValueError("bad sample")

    it = Prefetcher(failing(), 2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad sample"):
        next(it)
    with Prefetcher(iter(range(1000)), 2) as early:
        assert next(early) == 0  # leaving early must not hang on the producer blocked on a full queue
    assert not early._thread.is_alive()


def test_resume_with_other_settings_is_refused(tmp_path):
    fit(build_model(), ToyData(), config(epochs=1), tmp_path, validate=make_validate(), progress=False)
    with pytest.raises(TrainingError, match=r"cannot resume: config\.lr was 0\.01, now 0\.02"):
        fit(build_model(), ToyData(), config(epochs=1, lr=2e-2), tmp_path, validate=make_validate(),
            resume=True, progress=False)  # fmt: skip
    # Settings that do not change the optimisation may differ.
    fit(build_model(), ToyData(), config(epochs=1, num_workers=1, checkpoint_every=5), tmp_path,
        validate=make_validate(), resume=True, progress=False)  # fmt: skip


def test_fresh_run_clears_an_older_run(tmp_path):
    fit(build_model(), ToyData(), config(epochs=2), tmp_path, validate=make_validate(), progress=False)
    (tmp_path / ".last.prev").mkdir()
    data = ToyData(nan_at=sampler.epoch_order(50, 5, 0)[0])  # NaN in the very first step
    with pytest.raises(TrainingError, match="no checkpoint yet"):
        fit(build_model(), data, config(epochs=2), tmp_path, validate=make_validate(), progress=False)
    assert list(tmp_path.iterdir()) == []  # no stale best/last/curves pretending to belong to this run


def test_bf16_autocast_only_on_cuda():
    import contextlib
    import warnings

    from vlpeft.train.loop import _autocast

    assert isinstance(_autocast(torch.device("cpu"), True), contextlib.nullcontext)
    assert isinstance(_autocast(torch.device("cuda"), False), contextlib.nullcontext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA not available" on CPU-only machines
        ctx = _autocast(torch.device("cuda"), True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
