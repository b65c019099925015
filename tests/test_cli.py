"""The command line as users expect it: -h, --version, on/off switches, order, choices, fast path errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import typer

from vlpeft import __version__
from vlpeft.cli import COMMANDS, app, main
from vlpeft.cli.switches import normalize_switches


def _command():
    from vlpeft.cli import _register

    _register()
    return typer.main.get_command(app)


def _walk(command, path=()):
    """Every (path, leaf command) of the tree."""
    subs = getattr(command, "commands", None)
    if subs is None:
        yield path, command
        return
    for name, sub in subs.items():
        yield from _walk(sub, (*path, name))


def test_help_and_version(capsys):
    assert main(["-h"]) == 0
    assert "Usage: vlpeft" in capsys.readouterr().out
    for args in (["train", "-h"], ["registry", "review", "-h"], ["multitask", "summary", "--help"]):
        assert main(args) == 0, args
        assert f"Usage: vlpeft {' '.join(args[:-1])}" in capsys.readouterr().out
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        assert capsys.readouterr().out.strip() == f"vlpeft {__version__}"
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_commands_are_listed_in_pipeline_order(capsys):
    command = _command()
    listed = command.list_commands(None)
    pipeline = ["data", "pretrain", "features", "sweep", "train", "report", "register", "registry"]
    assert [n for n in listed if n in pipeline] == pipeline
    assert (
        listed.index("registry") < listed.index("multitask")
        and "review" in command.commands["registry"].commands
    )
    assert set(listed) == set(command.commands) and set(COMMANDS) >= {
        n for n in listed if n != "multitask-summary"
    }
    assert "summary" in command.commands["multitask"].commands
    assert command.commands["multitask-summary"].hidden  # the earlier name still runs, unlisted
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.index("Pipeline") < out.index(" data ") < out.index(" train ") < out.index(" registry ")
    assert out.index(" registry ") < out.index("Multi-task") < out.index(" multitask ")
    assert "multitask-summary" not in out


def test_every_switch_has_both_forms():
    for path, leaf in _walk(_command()):
        if path[0] == "kfp":  # vlpeft/cli/kfp.py belongs to the Kubeflow work (kfp19); not checked here
            continue
        for param in leaf.params:
            if getattr(param, "is_bool_flag", False) and param.name not in ("help", "version"):
                assert param.secondary_opts, (path, param.opts)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--resume", "true", "--task", "vqa"], ["train", "--resume", "--task", "vqa"]),
        (["train", "--resume", "No"], ["train", "--no-resume"]),
        (["train", "--resume=off"], ["train", "--no-resume"]),
        (["train", "--no-test=yes"], ["train", "--no-test"]),
        (["train", "--no-test", "0"], ["train", "--test"]),
        (["data", "download", "--extract", "n"], ["data", "download", "--no-extract"]),
        (["params", "count", "--json", "1"], ["params", "count", "--json"]),
        # Not a switch, or not followed by a boolean word: untouched.
        (
            ["predict", "--question", "yes", "--task", "vqa"],
            ["predict", "--question", "yes", "--task", "vqa"],
        ),
        (["train", "--resume", "--task", "vqa"], ["train", "--resume", "--task", "vqa"]),
        (["train", "--resume", "maybe"], ["train", "--resume", "maybe"]),
    ],
)
def test_switches_take_the_values_users_type(args, expected):
    assert normalize_switches(_command(), args) == expected


@pytest.mark.parametrize(
    ("typed", "resume", "test"),
    [
        ([], False, True),
        (["--resume", "yes", "--no-test"], True, False),
        (["--resume=no", "--test", "off"], False, False),
    ],
)
def test_a_switch_value_reaches_the_command(tmp_path, typed, resume, test):
    # The real `train` command parses the normalised line: its parameters get the values typed.
    train = _command().commands["train"]
    args = ["--task", "vqa", "--data", str(tmp_path), "--out", "o", *typed]
    ctx = train.make_context("train", normalize_switches(_command(), ["train", *args])[1:])
    assert (ctx.params["resume"], ctx.params["test"]) == (resume, test)


def test_a_wrong_switch_value_is_one_line(tmp_path, capsys):
    code = main(["train", "--task", "vqa", "--data", str(tmp_path), "--out", "o", "--resume", "maybe"])
    err = capsys.readouterr().err
    assert code == 2 and "maybe" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("path", "option", "choices"),
    [
        (("data", "download"), "what", ("all", "coco-images", "karpathy", "vqa", "gqa", "nlvr")),
        (("data", "prepare"), "source", ("coco", "own", "gqa", "nlvr")),
        (("data", "prepare"), "link", ("symlink", "hardlink", "copy")),
        (("pretrain",), "only", ("vit", "roberta", "gpt2", "bart")),
        (("features-import",), "pool", ("max6x6", "none")),
        (("features-import",), "dtype", ("float16", "float32")),
        (("evaluate", "vqa"), "revision", ("master", "legacy")),
        (("evaluate", "caption"), "spice", ("auto", "off")),
        (("evaluate", "caption"), "meteor", ("on", "off")),
        (("params", "count"), "section", ("vqa", "caption", "multitask")),
        (("params", "count"), "family", ("vqa", "caption", "generative")),
        (("params", "count"), "convention", ("vl_adapter", "whole")),
        (("predict",), "task", ("vqa", "gqa", "nlvr", "caption")),
        (("registry", "review"), "split", ("train", "val", "test")),
        (("train",), "task", ("vqa", "caption", "multitask")),
        (("sweep",), "task", ("vqa", "caption")),
    ],
)
def test_options_with_a_fixed_set_list_their_choices(path, option, choices, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one help row per option
    assert main([*path, "-h"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if f" --{option} " in line]
    assert len(rows) == 1 and "|".join(choices) in rows[0], (path, option, rows)
    code = main([*path, f"--{option}", "nonsense"])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'nonsense'" in err and f"--{option}" in err


def test_choices_agree_with_their_owners(tmp_path):
    from vlpeft.cli import choices
    from vlpeft.config import GenerativeTask
    from vlpeft.data.download import GROUPS
    from vlpeft.data.prepare import LINKS, link_image
    from vlpeft.data.vladapter_features import OUT_DTYPES, POOLS
    from vlpeft.errors import DataError
    from vlpeft.models.accounting import CONVENTIONS
    from vlpeft.pretrain.run import ALL_PARTS

    assert get_args(choices.DownloadGroup) == ("all", *GROUPS)
    assert tuple(ALL_PARTS) == choices.PRETRAIN_PARTS
    assert get_args(choices.H5Pool) == tuple(POOLS)
    assert get_args(choices.H5Dtype) == tuple(OUT_DTYPES)
    assert set(get_args(choices.Convention)) == set(CONVENTIONS)
    assert get_args(choices.PredictTask) == get_args(GenerativeTask)
    src = tmp_path / "a.txt"
    src.write_text("x")
    assert get_args(choices.LinkMode) == LINKS
    for mode in get_args(choices.LinkMode):  # each one links for real
        link_image(src, tmp_path / f"b-{mode}.txt", mode)
        assert (tmp_path / f"b-{mode}.txt").read_text() == "x"
    with pytest.raises(DataError):
        link_image(src, tmp_path / "c.txt", "reflink")


# A wrong input path of each kind of command. Each must be answered before torch (or MLflow) is imported.
WRONG_PATHS = [
    ["train", "--task", "vqa", "--data", "{missing}", "--out", "o"],
    ["train", "--task", "vqa", "--data", ".", "--features", "{missing}", "--out", "o"],
    ["sweep", "--task", "vqa", "--data", ".", "--features", "{missing}", "--out", "o"],
    ["pretrain", "--data", "{missing}"],
    ["features", "--data", "{missing}"],
    ["predict", "--model", "{missing}", "--image", "x.png"],
    ["report", "--metrics", "{missing}"],
    ["register", "--task", "vqa", "--run", "{missing}"],
    ["registry", "review", "--model", "m", "--out", "o", "--data", "{missing}"],
    ["evaluate", "caption", "--annotations", "{missing}", "--predictions", "{missing}", "--out", "o.json"],
    ["multitask", "summary", "--runs", "{missing}", "--out-md", "a.md", "--out-json", "a.json"],
    ["config", "-p", "{missing}"],
]

_PROBE = """
import json, sys
from vlpeft.cli import main
codes = [main(args) for args in json.loads(sys.argv[1])]
heavy = sorted(m for m in ("torch", "mlflow", "optuna", "vlpeft.config") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_a_wrong_path_is_answered_before_torch_is_imported(tmp_path):
    missing = str(tmp_path / "no-such-dir")
    cases = [[a.replace("{missing}", missing) for a in args] for args in WRONG_PATHS]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(cases)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(done.stdout)
    assert result["codes"] == [2] * len(cases), done.stderr
    assert result["heavy"] == [], "a path error must not wait for these imports"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(cases), done.stderr  # one line per mistake
    assert all(line.startswith("error: ") and missing in line for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written (no mlflow.db, no output dir)"


def test_console_script_and_module_agree(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vlpeft", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"vlpeft {__version__}"
    assert not list(Path(tmp_path).iterdir())
