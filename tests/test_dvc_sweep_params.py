"""dvc.yaml's sweep stage depends on what the sweep reads, not on values its trials override (real DVC)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from dvc_run import run_dvc

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_reruns_only_for_what_it_reads(tmp_path):
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    shutil.copy(ROOT / ".dvcignore", tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(["init", "-q"], tmp_path)
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["sweep"]["do"]
    for dep in [*stage["deps"], *(o.replace("${item}", "vqa") for o in stage["outs"])]:
        path = tmp_path / dep
        if dep.endswith(".py"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "f").write_text("x\n")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["sweep"]["storage"] = "postgresql://optuna:S3cr3t@db/optuna"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_dvc(["commit", "-f", "-q", "sweep@vqa"], tmp_path)
    assert "S3cr3t" not in (tmp_path / "dvc.lock").read_text()  # the storage URL is not a declared param

    def status_after(section: str, key: str, value) -> str:
        changed = yaml.safe_load((tmp_path / "params.yaml").read_text())
        changed[section][key] = value
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(changed))
        return run_dvc(["status", "sweep@vqa"], tmp_path)

    # Python's bytecode caches beside the code a stage imported are not a change of that code
    cache = tmp_path / "vlpeft" / "train" / "__pycache__"
    cache.mkdir()
    (cache / "loop.cpython-311.pyc").write_bytes(b"\x00")
    assert "up to date" in run_dvc(["status", "sweep@vqa"], tmp_path)
    assert "up to date" in status_after("vqa", "epochs", 99)  # trials train sweep.epochs epochs
    assert "up to date" in status_after("sweep", "heartbeat_interval", 5)  # execution only
    assert "vqa.batch_size" in status_after("vqa", "batch_size", 7)
