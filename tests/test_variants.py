"""The final variants as data: params.yaml's variants/seeds, their resolution, dvc.yaml's matrix over them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dvc_run import run_dvc

from vlpeft.config import load_params, params_from_dict
from vlpeft.errors import ConfigError
from vlpeft.variants import final_runs, parse_run_name, resolve_variant, run_name

ROOT = Path(__file__).parents[1]
BEST = {"vqa": {"peft": {"routing": "mul", "rank": 4}, "lr": 0.001}}


def test_default_variants_resolve_over_the_sweep_best():
    params = params_from_dict({"vqa": {"seed": 7, "peft": {"rank": 8}}})
    best = resolve_variant(params, "vqa", "best", None, BEST)
    assert (best.vqa.peft.routing, best.vqa.peft.rank, best.vqa.lr, best.vqa.seed) == ("mul", 4, 0.001, 7)
    assert best.model.visual_prefix
    plain = resolve_variant(params, "vqa", "norouting", 2, BEST)
    assert (plain.vqa.peft.routing, plain.vqa.peft.rank, plain.vqa.lr, plain.vqa.seed) == (
        "none",
        4,
        0.001,
        2,
    )
    assert plain.model.visual_prefix
    blind = resolve_variant(params, "caption", "blind", 1)
    assert (blind.caption.peft.routing, blind.model.visual_prefix, blind.caption.seed) == ("none", False, 1)
    assert blind.vqa == params.vqa  # `task.` is the trained task's section only
    assert params.vqa.peft.routing == "none" and params.model.visual_prefix  # the input is not changed


def test_a_variant_table_of_users_own():
    params = params_from_dict(
        {
            "variants": {"add": {"task.peft.routing": "add", "vqa.epochs": 2}},
            "seeds": [3, 4],
            "registry": {"variant": "add"},  # without it: registry.variant 'best' is not a variant (one line)
        }
    )
    run = resolve_variant(params, "vqa", "add", 4)
    assert (run.vqa.peft.routing, run.vqa.epochs, run.vqa.seed) == ("add", 2, 4)
    assert [r.name for r in final_runs(params)] == [
        "vqa-add-3",
        "vqa-add-4",
        "caption-add-3",
        "caption-add-4",
    ]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        (
            {"norouting": {"task.peft.rout": "none"}},
            "variants.norouting: 'task.peft.rout': task.peft has no key 'rout'",
        ),
        ({"x": {"modle.visual_prefix": False}}, "'modle.visual_prefix': the top level has no key 'modle'"),
        ({"x": {"model.visual_prefix.on": 1}}, "model.visual_prefix has no key 'on'"),
        ({"x": {"task.val_cider_images": 3}}, "task has no key 'val_cider_images'"),  # a vqa section has none
        ({"x": {"task.peft.routing": "gate"}}, "variants.x (vqa): vqa.peft.routing: Input should be"),
        ({"x": {"seeds": [1]}}, "cannot change the variant table or the seeds"),
        ({"Best-1": {}}, "variant name 'Best-1'"),
    ],
)
def test_bad_variant_is_one_clear_error_at_load(variants, message):
    with pytest.raises(ConfigError) as err:
        params_from_dict({"variants": variants}, "params.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_variant_and_duplicate_seeds():
    with pytest.raises(ConfigError, match="variant 'gated': not in params variants"):
        resolve_variant(params_from_dict({}), "vqa", "gated")
    with pytest.raises(ConfigError, match="seeds must be distinct"):
        params_from_dict({"seeds": [0, 0]})
    with pytest.raises(ConfigError, match=r"more_seeds.seeds \[0, 1\] must be distinct and not in seeds"):
        params_from_dict({"seeds": [0], "more_seeds": {"variants": ["blind"], "seeds": [0, 1]}})
    with pytest.raises(ConfigError, match=r"more_seeds.variants: \['gated'\] not in the variants table"):
        params_from_dict({"more_seeds": {"variants": ["gated"], "seeds": [1]}})


def test_config_cli_exits_2_naming_the_variant_key(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("variants:\n  norouting:\n    task.peft.routin: none\n")
    cmd = [sys.executable, "-m", "vlpeft", "config", "--params", str(bad)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "variants.norouting: 'task.peft.routin'" in proc.stderr


def test_run_names_round_trip():
    assert run_name("caption", "norouting", 2) == "caption-norouting-2"
    run = parse_run_name("caption-norouting-2")
    assert (run.task, run.variant, run.seed, run.name) == ("caption", "norouting", 2, "caption-norouting-2")
    for bad in ("pretrain", "vqa-best", "gqa-best-0", "vqa-best-x"):
        with pytest.raises(ConfigError):
            parse_run_name(bad)


def test_dvc_matrix_iterates_the_params_table():
    """dvc.yaml's train stages are exactly final_runs(params.yaml): one table, read by DVC and the library."""
    stages = {s for s in run_dvc(["stage", "list", "--name-only"], ROOT).split() if s.startswith("train@")}
    assert stages == {f"train@{r.name}" for r in final_runs(load_params([ROOT / "params.yaml"]))}


def test_multitask_dvc_matrix_is_variants_by_seeds_plus_more_seeds():
    """multitask/dvc.yaml trains every variant of multitask/params.yaml at every seed, and the variants of
    more_seeds (the controls and plain LoRA) at its extra seeds, each in its own run directory (what the
    summary groups: mean ± std over seeds, gains over blind paired by seed)."""
    mt = ROOT / "multitask"
    params = load_params([mt / "params.yaml"])
    assert "blind" in params.more_seeds.variants and params.more_seeds.seeds
    listed = run_dvc(["stage", "list"], mt).splitlines()
    trains = {line.split()[0]: line.split()[-1] for line in listed if line.startswith("train")}
    want = {
        f"train@{v}-{seed}": f"artifacts/train/multitask-{v}-{seed}"
        for v in params.variants
        for seed in params.seeds
    }
    want |= {
        f"train_more@{v}-{seed}": f"artifacts/train/multitask-{v}-{seed}"
        for v in params.more_seeds.variants
        for seed in params.more_seeds.seeds
    }
    assert trains == want
