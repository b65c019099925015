"""Multi-task training (VL-Adapter's setting): the batch plan, resume, VQA targets, a tiny end-to-end run."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import numpy as np
import pytest
import torch
from multitask_helpers import multitask_params
from toy_trainer import ToyData, build_model, config, make_validate

from vlpeft.train import sampler
from vlpeft.train.loop import fit
from vlpeft.train.multitask import plan
from vlpeft.train.multitask.tasks import sample_answer, vqa_answer_scores

SIZES = {"vqa": 23, "gqa": 17, "nlvr": 6, "caption": 11}
BATCH = {"vqa": 5, "gqa": 8, "nlvr": 2, "caption": 4}


def test_plan_visits_every_batch_of_every_task_exactly_once():
    offsets = plan.task_offsets(SIZES)
    for epoch in range(3):
        batches = plan.epoch_plan(SIZES, BATCH, seed=7, epoch=epoch)
        assert len(batches) == plan.steps_per_epoch(SIZES, BATCH) == 5 + 3 + 3 + 3
        seen = Counter()
        for task, idx in batches:
            lo, hi = offsets[task], offsets[task] + SIZES[task]
            assert all(lo <= i < hi for i in idx)  # one task per batch
            assert len(idx) <= BATCH[task]
            seen.update(idx)
        assert sorted(seen) == list(range(sum(SIZES.values()))) and set(seen.values()) == {1}
        per_task = Counter(t for t, _ in batches)
        assert per_task == {t: -(-n // BATCH[t]) for t, n in SIZES.items()}


def test_plan_is_a_function_of_seed_and_epoch_alone():
    a = plan.epoch_plan(SIZES, BATCH, seed=7, epoch=1)
    assert plan.epoch_plan(dict(SIZES), dict(BATCH), seed=7, epoch=1) == a  # every rank computes this
    assert plan.epoch_plan(SIZES, BATCH, seed=7, epoch=2) != a  # reshuffled every epoch
    assert plan.epoch_plan(SIZES, BATCH, seed=8, epoch=1) != a
    tasks_in_order = [t for t, _ in a]
    assert tasks_in_order != sorted(tasks_in_order)  # tasks interleave
    # each rank's micro-batches of a planned step partition the step's batch
    for _, idx in a:
        parts = [sampler.rank_micro_batches(idx, 2, r, 1)[0] for r in range(2)]
        assert parts[0] + parts[1] == idx


class PlannedToy(ToyData):
    """The toy data split into two 'tasks' of different batch sizes, planned like the multi-task data."""

    def __init__(self) -> None:
        super().__init__(n=50)
        self.sizes = {"a": 30, "b": 20}
        self.batch_sizes = {"a": 8, "b": 3}
        self.calls: list[list[int]] = []

    def epoch_plan(self, seed: int, epoch: int) -> list[list[int]]:
        return [idx for _, idx in plan.epoch_plan(self.sizes, self.batch_sizes, seed, epoch)]

    def batch(self, indices):
        self.calls.append(list(indices))
        return super().batch(indices)


class Crash(Exception):
    pass


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_planned_loop_runs_the_plan_and_resumes_mid_epoch_exactly(tmp_path):
    cfg = config(epochs=2, checkpoint_every=3)
    data = PlannedToy()
    model = build_model()
    result = fit(model, data, cfg, tmp_path / "full", validate=make_validate(), progress=False)
    steps = plan.steps_per_epoch(data.sizes, data.batch_sizes)
    assert result.global_step == 2 * steps
    assert data.calls == [b for e in range(2) for b in data.epoch_plan(cfg.seed, e)]
    want = _weights(model)

    def crash_at(step: int) -> None:
        if step == steps + 5:  # mid second epoch (11 steps each), one step after the checkpoint of step 15
            raise Crash

    model = build_model()
    with pytest.raises(Crash):
        fit(model, PlannedToy(), cfg, tmp_path / "cut", validate=make_validate(), on_step=crash_at,
            progress=False)  # fmt: skip
    resumed_data = PlannedToy()
    model = build_model()
    again = fit(
        model, resumed_data, cfg, tmp_path / "cut", validate=make_validate(), resume=True, progress=False
    )
    assert steps == 11 and again.resumed_from == {"epoch": 1, "batch": 4, "global_step": 15}
    assert resumed_data.calls == data.epoch_plan(cfg.seed, 1)[4:]
    got = _weights(model)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_vqa_target_is_sampled_in_proportion_to_its_soft_score():
    answers = ["red"] * 6 + ["blue"] * 3 + ["green"]
    scores = vqa_answer_scores(answers)
    assert scores == pytest.approx({"red": 1.0, "blue": 0.9, "green": 0.3})
    rng = np.random.default_rng(0)
    draws = [sample_answer(scores, rng) for _ in range(20000)]
    freq = Counter(a for a, _ in draws)
    total = sum(scores.values())
    for a, s in scores.items():
        assert freq[a] / len(draws) == pytest.approx(s / total, abs=0.01)
    assert all(w == scores[a] for a, w in draws)


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_multitask_run_trains_validates_per_task_saves_loads_and_predicts(mt_setup, tmp_path, capsys):
    from vlpeft.models import load_vl_model
    from vlpeft.train.run import build_task, train_task

    world, root = mt_setup
    routing = "vl"  # routed LoRA in every encoder and decoder attention (routing none: the plain LoRA path)
    params = multitask_params(root, routing)
    binding = build_task(params, "multitask", world, root / "features")
    assert binding.sizes == {"vqa": 16, "gqa": 16, "nlvr": 16, "caption": 16}
    planned = plan.epoch_plan(binding.sizes, params.multitask.batch_sizes, 1, 0)
    assert binding.epoch_plan(1, 0) == [idx for _, idx in planned]
    first = {task: idx for task, idx in reversed(planned)}
    nlvr_batch = binding.batch(first["nlvr"])
    assert nlvr_batch["task"] == "nlvr" and nlvr_batch["visual"].shape[1] == 2  # two pooled images
    vqa_batch = binding.batch(first["vqa"])
    assert vqa_batch["loss_reduction"] == "sample" and vqa_batch["sample_weights"].min() > 0

    flat = train_task(params, "multitask", world, root / "features", tmp_path, progress=False)
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert len(curves) == 2
    for key in ("val_vqa_accuracy", "val_gqa_accuracy", "val_nlvr_accuracy", "val_nlvr_consistency",
                "val_caption_cider", "val_average"):  # fmt: skip
        assert all(key in c for c in curves)
    row = curves[-1]
    heads = ("val_vqa_accuracy", "val_gqa_accuracy", "val_nlvr_accuracy", "val_caption_cider")
    assert row["val_average"] == pytest.approx(sum(row[k] for k in heads) / 4)
    assert flat["train.steps"] == 2 * plan.steps_per_epoch(binding.sizes, params.multitask.batch_sizes)
    for task in ("vqa", "gqa", "nlvr", "caption"):
        assert f"test.{task}.score" in flat
    assert flat["test.average"] == pytest.approx(
        sum(flat[f"test.{t}.score"] for t in ("vqa", "gqa", "nlvr", "caption")) / 4
    )
    for task in ("vqa", "gqa", "nlvr", "caption"):  # the image-shuffled control, scored the same way
        assert f"test_shuffled.{task}.score" in flat

    vqa_preds = json.loads((tmp_path / "predictions_test_vqa.json").read_text())
    assert set(vqa_preds[0]) == {"question_id", "answer"}
    gqa_preds = json.loads((tmp_path / "predictions_test_gqa.json").read_text())
    assert set(gqa_preds[0]) == {"questionId", "prediction"}
    nlvr_lines = (tmp_path / "predictions_test_nlvr.csv").read_text().splitlines()
    assert all(line.split(",")[1] in ("True", "False") for line in nlvr_lines)
    shuffled_nlvr = (tmp_path / "shuffled-images" / "predictions_test_nlvr.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in shuffled_nlvr] == [line.split(",")[0] for line in nlvr_lines]
    captions = json.loads((tmp_path / "predictions_test_caption.json").read_text())
    assert set(captions[0]) == {"image_id", "caption"}

    model = load_vl_model(tmp_path / "last")
    assert model.peft_cfg.routing == routing
    gqa = binding.tasks["gqa"]
    answers = gqa.generate(model, gqa.val[:2], binding.visual(gqa), 1, 4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    # `vlpeft predict` on image files: one task of the multi-task model, as the Predictor gives it.
    from vlpeft.cli import main
    from vlpeft.data.images import image_table, load_image
    from vlpeft.train.predict import Predictor

    paths = [path for _, path in image_table(world)[:2]]
    predictor = Predictor.load(tmp_path / "last")
    cli = ["predict", "--model", str(tmp_path / "last"), "--image", str(paths[0])]
    for task, extra, text in (("vqa", ["--question", "what color is the cube?"], "what color is the cube?"),
                              ("caption", [], ""),
                              ("nlvr", ["--question", "both images have a cube", "--image2", str(paths[1])],
                               "both images have a cube")):  # fmt: skip
        second = [load_image(paths[1])] if task == "nlvr" else [None]
        want = predictor.outputs([task], [load_image(paths[0])], [text], second)[0]
        capsys.readouterr()
        assert main([*cli, "--task", task, *extra]) == 0
        assert capsys.readouterr().out.strip() == want.strip()
    assert main(cli) == 2  # a multi-task model needs --task
    assert "--task: required" in capsys.readouterr().err


def _write_run(root, name, scores, *, routing="none", variant=None, lr=None, seed=0, val=None):
    """A run directory whose metrics.json has train_task's multi-task layout."""
    test = {t: {"score": s} for t, s in zip(("vqa", "gqa", "nlvr", "caption"), scores, strict=True)}
    test["nlvr"]["consistency"] = 20.0
    test["average"] = sum(scores) / 4
    model = {"method": "adapter", "sharing": "single", "routing": routing, "percent": 1.5, "seed": seed}
    metrics = {"variant": variant, "train": {"lr": lr}, "model": model, "test": test,
               "val": {"best": 99.0, "last": test["average"] if val is None else val},
               "test_checkpoint": "last"}  # fmt: skip
    (root / name).mkdir()
    (root / name / "metrics.json").write_text(json.dumps(metrics))


def test_summary_table_has_every_task_and_the_average(tmp_path):
    from vlpeft.train.multitask.summary import write_summary

    _write_run(tmp_path, "a", (50.0, 40.0, 60.0, 80.0))
    _write_run(tmp_path, "b", (52.0, 41.0, 63.0, 90.0), routing="vl")
    (tmp_path / "not-a-run").mkdir()  # no metrics.json: not listed
    rows, _ = write_summary(tmp_path, ["b", "a"], tmp_path / "s.md", tmp_path / "s.json", tmp_path / "s.png")
    assert [r["average"] for r in rows] == [61.5, 57.5]  # in the order asked for
    md = (tmp_path / "s.md").read_text().splitlines()
    head = "| variant | method | sharing | routing | trainable % | lr | seeds | VQA | GQA | NLVR2 | CIDEr"
    assert md[0].startswith(head)
    assert (
        md[2]
        == "| b | adapter | single | vl | 1.50 | – | 1 | 52.00 | 41.00 | 63.00 | 90.00 | 20.00 | 61.50 |"
    )
    assert (tmp_path / "s.png").stat().st_size > 0
    # without names: every run under the directory, by name (the DVC stage lists no names)
    every, _ = write_summary(tmp_path, None, tmp_path / "s.md", tmp_path / "s.json", None)
    assert [r["variant"] for r in every] == ["a", "b"]


def test_summary_picks_each_variants_lr_by_validation_and_averages_its_seeds(tmp_path):
    """Per variant, the lr with the best mean validation average wins (even when another lr has the better
    test score: the test split chooses nothing); its test scores are means over seeds, ± sample std."""
    from vlpeft.train.multitask.summary import write_summary

    # variant x: lr 0.001 validates at 55 (seeds 0, 1), lr 0.01 validates at 50 but tests higher.
    _write_run(tmp_path, "x-lr0.001-0", (50.0, 40.0, 60.0, 80.0), variant="x", lr=0.001, seed=0, val=55.0)
    _write_run(tmp_path, "x-lr0.001-1", (54.0, 44.0, 64.0, 84.0), variant="x", lr=0.001, seed=1, val=55.0)
    _write_run(tmp_path, "x-lr0.01-0", (90.0, 90.0, 90.0, 90.0), variant="x", lr=0.01, seed=0, val=50.0)
    _write_run(tmp_path, "y-lr0.01-0", (10.0, 20.0, 30.0, 40.0), variant="y", lr=0.01, val=1.0)
    rows, grid = write_summary(
        tmp_path, None, tmp_path / "s.md", tmp_path / "s.json", None, tmp_path / "p.json"
    )
    x, y = rows
    assert (x["variant"], x["lr"], x["seeds"], x["val_average"]) == ("x", 0.001, 2, 55.0)
    assert x["VQA"] == 52.0 and x["average"] == 59.5  # mean of 57.5 and 61.5
    assert x["average_std"] == round(statistics.stdev([57.5, 61.5]), 2)
    assert (y["lr"], y["seeds"], y["average_std"]) == (0.01, 1, None)
    assert {(g["variant"], g["lr"]): g["val_average"] for g in grid} == {
        ("x", 0.001): 55.0,
        ("x", 0.01): 50.0,
        ("y", 0.01): 1.0,
    }
    md = (tmp_path / "s.md").read_text()
    assert "| x | adapter | single | none | 1.50 | 0.001 | 2 | 52.00 ± 2.83 |" in md
    assert "59.50 ± 2.83 |" in md
    assert "| x | 55.00 | 50.00 |" in md and "| y | – | 1.00 |" in md  # the lr search, validation only
    assert json.loads((tmp_path / "p.json").read_text()) == [
        {"variant": "x", "average": 59.5},
        {"variant": "y", "average": 25.0},
    ]


@pytest.mark.slow
def test_multitask_trains_on_imported_vladapter_features(mt_setup, tmp_path):
    """VL-Adapter's released layout (``<name>.h5`` with a (49, 2048) ``<name>/features`` grid) for every image
    of the tiny world, imported with ``features-import``, trains the multi-task model with ``model.vision:
    RN101`` through VL-T5's visual embedding; the same store is refused under another ``model.vision``."""
    import h5py

    from vlpeft.cli import main
    from vlpeft.config import params_from_dict
    from vlpeft.data.features import FeatureStore
    from vlpeft.data.vladapter_features import data_root_ids
    from vlpeft.errors import DataError
    from vlpeft.train.run import build_task, train_task

    world, root = mt_setup
    h5_dir = tmp_path / "h5"
    h5_dir.mkdir()
    g = torch.Generator().manual_seed(0)
    one_name = {image_id: name for name, image_id in sorted(data_root_ids(world).items())}
    for name in one_name.values():  # the world's NLVR2 and GQA images are its own: one file per image
        with h5py.File(h5_dir / f"{name}.h5", "w") as f:
            f.create_group(name).create_dataset("features", data=torch.randn(49, 2048, generator=g).numpy())
    store_dir = tmp_path / "rn101"
    assert (
        main(["features-import", "--h5-dir", str(h5_dir), "--data", str(world), "--out", str(store_dir)]) == 0
    )
    assert FeatureStore(store_dir).provenance["encoder"] == "RN101"

    raw = multitask_params(root, "vl").model_dump(mode="json")
    raw["model"].update({"vision": "RN101", "projection": "vl_t5", "visual_features": "tokens"})
    raw["multitask"].update({"epochs": 1, "lr": 1e-3})
    params = params_from_dict(raw, "rn101 multitask params")
    binding = build_task(params, "multitask", world, store_dir)
    planned = plan.epoch_plan(binding.sizes, params.multitask.batch_sizes, 0, 0)
    nlvr = binding.batch(next(idx for task, idx in planned if task == "nlvr"))
    assert nlvr["visual"].shape[1:] == (2 * 36, 2048)  # two images of 36 pooled grid tokens each
    flat = train_task(params, "multitask", world, store_dir, tmp_path / "run", progress=False)
    assert "test.average" in flat and flat["train.steps"] > 0

    # A store that names another encoder is refused: equal widths are no proof of equal features.
    other = tmp_path / "other"
    imported = ["features-import", "--h5-dir", str(h5_dir), "--data", str(world), "--encoder", "RN50"]
    assert main([*imported, "--out", str(other)]) == 0
    with pytest.raises(DataError, match=r"imported features of encoder 'RN50', but model\.vision is 'RN101'"):
        build_task(params, "multitask", world, other)
