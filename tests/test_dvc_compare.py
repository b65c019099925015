"""The README's DVC comparison path, with real DVC in scratch repositories (a tiny stage, not the pipeline).

- ``make run`` ends with ``scripts/dvc_baseline.py``, so ``dvc exp run -S ... && dvc metrics diff`` shows the
  old value, the new one and the change on a fresh clone;
- the plots of ``dvc.yaml``: one per task and kind of figure, one colour per run (``dvc plots show``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from dvc_run import run_dvc

ROOT = Path(__file__).resolve().parents[1]

# A stage shaped like train@vqa: reads vqa.peft.rank, writes a headline metrics file (cache: false).
STAGE = """
import json, pathlib, yaml
rank = yaml.safe_load(open("params.yaml"))["vqa"]["peft"]["rank"]
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/vqa-best-0.json").write_text(json.dumps({"overall": 60.0 + rank / 4}))
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _fresh_clone(tmp_path: Path) -> Path:
    """A committed project as a user clones it: params, dvc.yaml, code, .gitignore; no dvc.lock or metrics."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@localhost")
    _git(repo, "config", "user.name", "t")
    run_dvc(["init", "-q"], repo)
    (repo / "stage.py").write_text(STAGE)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")  # the real one (vqa.peft.rank: 8)
    dvc = {
        "stages": {
            "train": {
                "cmd": f"{sys.executable} stage.py",
                "deps": ["stage.py"],
                "params": ["vqa.peft.rank"],
                "metrics": [{"metrics/vqa-best-0.json": {"cache": False}}],
            }
        }
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "fresh clone")
    return repo


def _baseline(repo: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dvc_baseline.py"), str(repo)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_readme_comparison_path_from_a_fresh_clone(tmp_path):
    repo = _fresh_clone(tmp_path)
    run_dvc(["repro", "-q"], repo)  # `make run` = dvc repro + the baseline
    assert "committed the DVC baseline" in _baseline(repo)
    assert _git(repo, "status", "--porcelain") == "", "the run left nothing uncommitted"
    assert set(_git(repo, "show", "--name-only", "--format=", "HEAD").split()) == {
        "dvc.lock",
        "metrics/vqa-best-0.json",
    }
    assert "already committed" in _baseline(repo)  # a second make run with nothing new: no empty commit

    # The README: dvc exp run -S vqa.peft.rank=16 && dvc metrics diff
    run_dvc(["exp", "run", "-q", "-S", "vqa.peft.rank=16"], repo)
    diff = json.loads(run_dvc(["metrics", "diff", "--json"], repo))
    assert diff == {"metrics/vqa-best-0.json": {"overall": {"old": 62.0, "new": 64.0, "diff": 2.0}}}
    params = json.loads(run_dvc(["params", "diff", "--json"], repo))
    assert params == {"params.yaml": {"vqa.peft.rank": {"old": 8, "new": 16, "diff": 8}}}
    # DVC rewrote params.yaml with its own writer: the one value set is the only change (no null -> empty).
    assert _git(repo, "diff", "--numstat", "params.yaml").split() == ["1", "1", "params.yaml"]

    # Results of changed params are not HEAD's: the baseline is left alone, with the reason.
    head = _git(repo, "rev-parse", "HEAD")
    note = _baseline(repo)
    assert "params.yaml changed since HEAD" in note and _git(repo, "rev-parse", "HEAD") == head


def test_make_run_commits_the_baseline():
    done = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = [line.strip() for line in done.stdout.splitlines()]
    repro = next(i for i, line in enumerate(lines) if line.endswith("dvc repro"))
    assert lines[repro + 1].endswith("python scripts/dvc_baseline.py")


def _curves(path: Path, run: str) -> None:
    """A curves.json as train writes it: per epoch, losses and the validation metric of its scale."""
    scale = 100.0 if run.startswith("vqa") else 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_metric": scale * e / 3} for e in (1, 2)
    ]
    path.write_text(json.dumps(records))


def test_plots_one_per_task_and_kind_coloured_by_run(tmp_path):
    repo = tmp_path / "plots"
    repo.mkdir()
    _git(repo, "init", "-q")
    run_dvc(["init", "-q"], repo)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    files = {f for plot in spec["plots"] if isinstance(plot, dict) for p in plot.values() for f in p["y"]}
    seed = yaml.safe_load((ROOT / "params.yaml").read_text())["seeds"][0]
    for f in files:
        path = repo / f.replace("${seeds[0]}", str(seed))
        _curves(path, path.parent.name)
    shown = json.loads(run_dvc(["plots", "show", "--json", "--split"], repo))
    # The only error: reports/summary.png, which the summary stage (not run here) draws.
    assert [e["name"] for e in shown.get("errors", [])] == ["reports/summary.png"]
    vega = {n: entries[0] for n, entries in shown["data"].items() if entries and entries[0]["type"] == "vega"}
    assert set(vega) == {"vqa loss", "vqa validation accuracy", "caption loss", "caption validation CIDEr"}
    for name, entry in vega.items():
        content = entry["content"]
        runs = {d["filename"].split("/")[0] for d in entry["anchor_definitions"]["<DVC_METRIC_DATA>"]}
        task = name.split()[0]
        assert runs == {f"{task}-{v}-{seed}" for v in ("best", "norouting", "blind")}, name  # one task a plot
        assert content["encoding"]["color"]["field"] == "run"  # coloured by run (task-variant-seed)
        assert content["transform"][0] == {"calculate": "split(datum.filename, '/')[0]", "as": "run"}
        assert entry["anchor_definitions"]["<DVC_METRIC_TITLE>"].lower().startswith(task[:3])
        label = entry["anchor_definitions"]["<DVC_METRIC_Y_LABEL>"]
        assert ("%" in label) == (name == "vqa validation accuracy") and ("CIDEr" in label) == (
            "CIDEr" in name
        )
    fields = {
        name: {d["field"] for d in entry["anchor_definitions"]["<DVC_METRIC_DATA>"]}
        for name, entry in vega.items()
    }
    assert fields["vqa loss"] == fields["caption loss"] == {"train_loss", "val_loss"}
    assert fields["vqa validation accuracy"] == fields["caption validation CIDEr"] == {"val_metric"}
