"""The task table (``vlpeft.tasks``): lookups, CLI choices, validation metric, params sections."""

from __future__ import annotations

import pytest

from vlpeft.cli import main
from vlpeft.config import Params, params_from_dict
from vlpeft.errors import ConfigError
from vlpeft.models.backbones import BACKBONE_FIELD
from vlpeft.tasks import FAMILY_BACKBONE, TASKS, get_task, list_tasks


def test_every_task_points_at_real_config_fields():
    params = Params()
    for spec in TASKS.values():
        assert spec.section_of(params) is params.task(spec.name)
        assert hasattr(params.model, spec.backbone_field)
        assert isinstance(getattr(params.registry, spec.registry_field), str)
        assert spec.direction in ("maximize", "minimize")
    assert set(FAMILY_BACKBONE) == set(BACKBONE_FIELD)


def test_unknown_task_names_the_choices():
    with pytest.raises(ConfigError, match=r"--task: 'gqa2' is not one of vqa, caption, multitask"):
        get_task("gqa2", what="--task")
    with pytest.raises(ConfigError, match="'nope'"):
        Params().task("nope")


def test_caption_validation_falls_back_to_the_loss():
    spec = get_task("caption")
    assert spec.validation(Params().caption) == ("val_cider", True)
    no_cider = params_from_dict({"caption": {"val_cider_images": 0}})
    assert spec.validation(no_cider.caption) == ("val_loss", False)
    assert get_task("vqa").validation(Params().vqa) == ("val_accuracy", True)


def test_sweep_tasks_are_checked_against_the_table():
    with pytest.raises(ConfigError, match=r"sweep: .*tasks \['gqa2'\]"):
        params_from_dict({"sweep": {"tasks": ["vqa", "gqa2"]}})
    assert params_from_dict({"sweep": {"tasks": ["caption"]}}).sweep.tasks == ["caption"]


@pytest.mark.parametrize("command", ["train", "sweep", "register"])
def test_cli_task_option_lists_the_table(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main([command, "--help"]) == 0
    help_text = capsys.readouterr().out
    choices = list_tasks(sweepable=True) if command == "sweep" else list_tasks()
    assert "|".join(choices) in help_text
    assert main([command, "--task", "gqa2"]) == 2
    err = capsys.readouterr().err
    assert "gqa2" in err
    for name in choices:
        assert name in err  # click names the valid choices
