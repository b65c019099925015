"""Fast, in-process checks of the sweep's pieces: space, queue plan, params mapping, best params, table."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from vlpeft.config import params_from_dict
from vlpeft.errors import ConfigError
from vlpeft.sweep import load_best_params, merge_best_params
from vlpeft.sweep.report import cell_stats, table_markdown
from vlpeft.sweep.space import covering_points, grid_points, queue_plan, trial_params
from vlpeft.sweep.storage import open_storage, prepare_study
from vlpeft.sweep.study import study_direction


def params_with(**sweep):
    return params_from_dict({"sweep": sweep, "tracking": {"enabled": False}})


def test_covering_points_visit_every_value():
    sweep = params_with(
        routing=["none", "add", "mul", "vl"], rank=[2, 4, 8], method=["lora", "adapter"]
    ).sweep
    points = covering_points(sweep)
    assert len(points) == 4
    assert {p["routing"] for p in points} == {"none", "add", "mul", "vl"}
    assert {p["rank"] for p in points} == {2, 4, 8}
    assert {p["method"] for p in points} == {"lora", "adapter"}


def test_queue_plan_tpe_covers_first_then_leaves_slots_to_the_sampler():
    sweep = params_with(routing=["none", "mul", "vl"], rank=[4, 8]).sweep
    plan = queue_plan(sweep, 6, base_seed=5)
    assert [v for v, _ in plan[:3]] == covering_points(sweep)
    assert [v for v, _ in plan[3:]] == [{}, {}, {}]
    assert {s for _, s in plan} == {5}


def test_queue_plan_grid_repeats_cells_with_new_seeds():
    sweep = params_with(sampler="grid", routing=["none", "vl"], rank=[4], lr=[1e-3, 1e-2]).sweep
    grid = grid_points(sweep)
    assert grid == [
        {"routing": r, "rank": 4, "lr": lr} for r in ("none", "vl") for lr in (1e-3, 1e-2)
    ]  # fmt: skip
    plan = queue_plan(sweep, 6, base_seed=0)
    assert [v for v, _ in plan] == grid + grid[:2]
    assert [s for _, s in plan] == [0, 0, 0, 0, 1, 1]


def test_trial_params_map_onto_a_copy_of_the_task_section():
    params = params_from_dict(
        {"vqa": {"epochs": 9, "lr": 1e-3, "peft": {"rank": 8, "alpha": 16.0}},
         "sweep": {"epochs": 2, "max_train_samples": 50, "scale_alpha": True}}
    )  # fmt: skip
    run = trial_params(params, "vqa", {"routing": "mul", "rank": 4, "lr": 5e-3}, seed=7)
    assert (run.vqa.epochs, run.vqa.max_train_samples, run.vqa.seed, run.vqa.lr) == (2, 50, 7, 5e-3)
    assert (run.vqa.peft.routing, run.vqa.peft.rank, run.vqa.peft.alpha) == ("mul", 4, 8.0)
    assert run.caption == params.caption
    assert (params.vqa.epochs, params.vqa.peft.rank, params.vqa.peft.routing) == (9, 8, "none")


def test_best_params_merge_over_params(tmp_path):
    path = tmp_path / "best_params.json"
    path.write_text(
        json.dumps({"vqa": {"peft": {"rank": 16, "routing": "vl", "method": "adapter"}, "lr": 3e-4}})
    )
    base = params_from_dict({"vqa": {"epochs": 4, "peft": {"alpha": 2.0}}})
    merged = merge_best_params(base, path)
    assert (merged.vqa.peft.rank, merged.vqa.peft.routing, merged.vqa.peft.method) == (16, "vl", "adapter")
    assert (merged.vqa.lr, merged.vqa.epochs, merged.vqa.peft.alpha) == (3e-4, 4, 2.0)
    assert merged.caption == base.caption
    assert load_best_params(path)["vqa"]["lr"] == 3e-4


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"train": {"lr": 1}}, "expected a mapping with keys"),
        ({"vqa": {"peft": {"routing": "bogus"}}}, "routing"),
    ],
)
def test_bad_best_params_name_the_file(tmp_path, content, needle):
    path = tmp_path / "best.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=needle) as err:
        merge_best_params(params_from_dict({}), path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_table_best_and_mean_std_per_cell():
    records = [
        {"routing": "vl", "rank": 4, "state": "COMPLETE", "value": v} for v in (0.61, 0.65, 0.70)
    ] + [
        {"routing": "none", "rank": 4, "state": "COMPLETE", "value": 0.5},
        {"routing": "none", "rank": 8, "state": "PRUNED", "value": None},
        {"routing": "vl", "rank": 8, "state": "FAIL", "value": None},
    ]  # fmt: skip
    cells = cell_stats(records)
    vl = cells[("vl", 4)]
    assert vl["best"] == 0.70 and vl["n"] == 3
    assert vl["mean"] == pytest.approx(statistics.fmean([0.61, 0.65, 0.70]))
    assert vl["std"] == pytest.approx(statistics.stdev([0.61, 0.65, 0.70]))
    md = table_markdown(records, ["none", "mul", "vl"], [4, 8], "t")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
            if line.startswith("| `")}  # fmt: skip
    assert rows["`vl`"][0] == f"**0.7000** ({vl['mean']:.4f} ± {vl['std']:.4f}, n=3)"
    assert (
        rows["`vl`"][1] == "failed"
        and rows["`none`"] == ["**0.5000**", "pruned"]
        and rows["`mul`"] == ["–", "–"]
    )
    assert min(cell_stats(records, maximize=False)[("vl", 4)]["values"]) == 0.61


def test_study_tops_up_and_refuses_another_space(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    sweep = params_with(routing=["none", "vl"], rank=[4]).sweep
    storage = open_storage(url, sweep)
    assert prepare_study(storage, "s", sweep, "vqa", queue_plan(sweep, 3, 0)) == 3
    assert prepare_study(storage, "s", sweep, "vqa", queue_plan(sweep, 5, 0)) == 2
    assert prepare_study(storage, "s", sweep, "vqa", queue_plan(sweep, 5, 0)) == 0
    other = params_with(routing=["none", "mul"], rank=[4]).sweep
    with pytest.raises(ConfigError, match="another search space"):
        prepare_study(open_storage(url, other), "s", other, "vqa", queue_plan(other, 5, 0))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+psycopg2://u:secret@127.0.0.1:1/x",
            "postgresql+psycopg2://u:***@127.0.0.1:1/x: cannot open",
        ),
        (
            "mysql+pymysql://u:secret@127.0.0.1:1/x",
            "database driver pymysql is not installed (pip install PyMySQL)",
        ),
        (
            "mysql://u:secret@127.0.0.1:1/x",
            "no mysql database driver installed (pip install mysqlclient or PyMySQL)",
        ),
    ],
)  # a down server; a missing driver, named or SQLAlchemy's default for the dialect
def test_unreachable_database_or_missing_driver_is_one_config_error(url, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        open_storage(url, params_with().sweep)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_direction_auto_follows_the_validation_metric():
    assert study_direction(params_from_dict({}), "vqa") == "maximize"
    assert study_direction(params_from_dict({}), "caption") == "maximize"
    blind_cider = params_from_dict({"caption": {"val_cider_images": 0}})
    assert study_direction(blind_cider, "caption") == "minimize"
    assert study_direction(params_from_dict({"sweep": {"direction": "minimize"}}), "vqa") == "minimize"


def test_cli_refuses_a_bad_task(tmp_path, capsys):
    from vlpeft.cli import main

    code = main(["sweep", "--task", "retrieval", "--data", str(tmp_path), "--features", str(tmp_path),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--task" in err and "'retrieval'" in err and "vqa" in err  # the choices of the task table


@pytest.mark.parametrize(
    ("sweep", "expected_keys"),
    [
        (
            {"sampler": "grid", "lr": [1e-3, 1e-2], "method": ["lora", "adapter"]},
            {"routing", "rank", "lr", "method"},
        ),
        ({"lr": [1e-4, 1e-2]}, {"routing", "rank", "lr"}),
        ({"lr": [3e-3]}, {"routing", "rank", "lr"}),
        ({}, {"routing", "rank"}),
    ],
)
def test_suggest_reads_queued_points_and_samples_the_rest(sweep, expected_keys):
    import optuna

    from vlpeft.sweep.space import suggest

    cfg = params_with(routing=["none", "vl"], rank=[4, 8], **sweep).sweep
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    plan = queue_plan(cfg, 6, 0)
    for values, _ in plan:
        study.enqueue_trial(values)
    for values, _ in plan:
        got = suggest(study.ask(), cfg)
        assert set(got) == expected_keys
        assert all(got[k] == v for k, v in values.items())  # queued values are used as given
        if cfg.lr is not None and len(cfg.lr) == 2 and cfg.sampler != "grid":
            assert cfg.lr[0] <= got["lr"] <= cfg.lr[1]
        elif cfg.lr is not None and len(cfg.lr) == 1:
            assert got["lr"] == cfg.lr[0]
