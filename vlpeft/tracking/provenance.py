"""Where a run's code and data came from: git commit (+ dirty flag) and a provenance source for the data.

Two sources, chosen from the environment (``provenance_source``): under DVC (or by hand in a checkout) the
hashes read from ``dvc.lock``; inside a Kubeflow task (``$VLPEFT_KFP_RUN_ID`` set by our components) the KFP
run id, task name, image tag and input artifact URIs, since a pod has no ``dvc.lock``.

Everything here is best-effort and never raises for a missing git checkout or lock file: provenance is a
label on a run, not a precondition for running.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

CODE_SUFFIXES = (".py", ".toml", ".cfg")
UNKNOWN = "unknown"


def _git(args: list[str], cwd: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(cwd: str | Path = ".") -> str:
    """The checked-out commit (full SHA), or ``"unknown"`` outside a git repository."""
    return _git(["rev-parse", "HEAD"], cwd) or UNKNOWN


def git_dirty(cwd: str | Path = ".") -> bool | None:
    """True when tracked files differ from the commit; None outside a git repository.

    Untracked files are ignored: pipeline outputs (metrics, models) are untracked by design.
    """
    out = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return None if out is None else bool(out)


def read_lock(lock_path: str | Path = "dvc.lock") -> dict[str, Any]:
    """The ``stages`` mapping of a ``dvc.lock`` file; empty when it is missing or unreadable."""
    path = Path(lock_path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    stages = data.get("stages", {}) if isinstance(data, dict) else {}
    return stages if isinstance(stages, dict) else {}


def _entry_hash(entry: dict[str, Any]) -> str | None:
    # DVC 3 writes `hash: md5` + `md5: <hex>`; directories carry a `.dir` suffix on the md5.
    for key in ("md5", "etag", "checksum"):
        if entry.get(key):
            return str(entry[key])
    return None


def _is_code(path: str) -> bool:
    return path.endswith(CODE_SUFFIXES) or path.startswith("vlpeft/") or path == "vlpeft"


def stage_dep_hashes(stage: str, lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """``{dep path: hash}`` for the non-code deps of ``stage`` (e.g. ``train@vqa``) in ``dvc.lock``.

    A dep that is an output of another stage takes that stage's recorded output hash: upstream stages have
    already run (and rewritten their lock entries) when this stage starts, whereas this stage's own entry
    is still the one from its previous run. On a stage's first run it has no entry yet: its deps are read
    from ``dvc.yaml`` (DVC's own stage loader) and take their producers' hashes. Code deps are left out; the
    git commit versions code.
    """
    stages = read_lock(lock_path)
    own = stages.get(stage)
    if not isinstance(own, dict):
        own = {"deps": [{"path": p} for p in yaml_deps(stage, Path(lock_path).parent)]}
    produced: dict[str, str] = {}
    for name, entry in stages.items():
        if name == stage or not isinstance(entry, dict):
            continue
        for out in entry.get("outs", []) or []:
            if isinstance(out, dict) and out.get("path") and _entry_hash(out):
                produced[str(out["path"])] = str(_entry_hash(out))
    hashes: dict[str, str] = {}
    for dep in own.get("deps", []) or []:
        if not isinstance(dep, dict) or not dep.get("path") or _is_code(str(dep["path"])):
            continue
        path = str(dep["path"])
        value = produced.get(path) or _entry_hash(dep)
        if value:
            hashes[path] = value
    return hashes


def yaml_deps(stage: str, root: str | Path) -> list[str]:
    """The dep paths ``dvc.yaml`` in ``root`` declares for ``stage`` (foreach/matrix resolved by DVC); empty
    when there is no such project or stage."""
    if not (Path(root) / "dvc.yaml").is_file():
        return []
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            found = repo.stage.collect(stage)
    except Exception:  # not a DVC project here, or no such stage: no data version to give
        return []
    return [str(dep.def_path) for st in found for dep in st.deps]


def producing_stage(path: str | Path, lock_path: str | Path = "dvc.lock") -> str | None:
    """The ``dvc.lock`` stage whose output is ``path`` or contains it (e.g. ``train@vqa-best`` for
    ``artifacts/train/vqa-best/best``); None when no stage made it."""
    lock_path = Path(lock_path)
    target = Path(path).resolve()
    for name, entry in read_lock(lock_path).items():
        for out in (entry.get("outs", []) or []) if isinstance(entry, dict) else []:
            if not isinstance(out, dict) or not out.get("path"):
                continue
            out_path = (lock_path.parent / str(out["path"])).resolve()
            if target == out_path or out_path in target.parents:
                return str(name)
    return None


def data_version(stage: str, lock_path: str | Path = "dvc.lock") -> str:
    """One short digest of a stage's data deps (see ``stage_dep_hashes``), or ``"unknown"``.

    Two runs with the same data version read byte-identical data, features and backbones.
    """
    hashes = stage_dep_hashes(stage, lock_path)
    if not hashes:
        return UNKNOWN
    text = "\n".join(f"{p} {h}" for p, h in sorted(hashes.items()))
    return hashlib.md5(text.encode()).hexdigest()[:16]


# What a Kubeflow component tells the stage about its task (set by components/_base.py before the stage runs).
KFP_RUN_ENV = "VLPEFT_KFP_RUN_ID"
KFP_TASK_ENV = "VLPEFT_KFP_TASK"
IMAGE_ENV = "VLPEFT_IMAGE"
KFP_INPUTS_ENV = "VLPEFT_KFP_INPUTS"  # JSON {input name: artifact URI}
KFP_OUTPUTS_ENV = "VLPEFT_KFP_OUTPUTS"  # JSON {output name: artifact URI}
DATA_INPUTS = ("data", "features", "models")  # the inputs whose artifacts make a data version


def _digest(items: dict[str, str]) -> str:
    text = "\n".join(f"{p} {h}" for p, h in sorted(items.items()))
    return hashlib.md5(text.encode()).hexdigest()[:16]


class DvcProvenance:
    """Data provenance from ``dvc.lock`` in the project root (``dvc repro``, or a stage run by hand)."""

    name = "dvc"

    def __init__(self, root: str | Path) -> None:
        self.lock = Path(root) / "dvc.lock"

    def run_tags(self, stage: str | None) -> dict[str, str]:
        """``dvc_stage`` (under DVC) and ``dvc_data_hash`` of the stage's data deps."""
        tags = {}
        dvc_stage = os.environ.get("DVC_STAGE")  # DVC names the exact stage (``train@vqa-best``)
        if dvc_stage:
            tags["dvc_stage"] = dvc_stage
        if stage or dvc_stage:
            tags["dvc_data_hash"] = data_version(dvc_stage or str(stage), self.lock)
        return tags

    def version_tags(self) -> dict[str, str]:
        """Extra tags of a registered version (none: data_version and train_stage say it all)."""
        return {}

    def train_stage(self, model_dir: str | Path) -> str | None:
        """The ``dvc.lock`` stage that wrote ``model_dir`` (``train@vqa-best``), if any."""
        return producing_stage(model_dir, self.lock)

    def data_version(self, stage: str) -> str:
        """The digest of ``stage``'s data deps in ``dvc.lock`` (see ``data_version``)."""
        return data_version(stage, self.lock)

    def train_run_id(self, client: Any, experiment: str, task: str, model_dir: str | Path) -> str | None:
        """The newest finished MLflow run of the stage that wrote ``model_dir`` (else of ``train@<task>``)."""
        from vlpeft.tracking.registry import latest_run_id

        stage = self.train_stage(model_dir)
        return latest_run_id(client, experiment, stage or f"train@{task}", dvc=bool(stage))


class KfpProvenance:
    """Provenance of a Kubeflow task: run id, task name, image tag and the URIs of its input artifacts.

    KFP caching reuses an artifact (and its URI) exactly when the producing task's inputs are unchanged, so
    the URIs of the ``data``/``features``/``models`` inputs version the data as ``dvc.lock`` hashes do.
    """

    name = "kfp"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        self.run_id = env.get(KFP_RUN_ENV, UNKNOWN)
        self.task = env.get(KFP_TASK_ENV, UNKNOWN)
        self.image = env.get(IMAGE_ENV, UNKNOWN)
        self.inputs = _json_map(env.get(KFP_INPUTS_ENV))
        self.outputs = _json_map(env.get(KFP_OUTPUTS_ENV))

    def _common(self) -> dict[str, str]:
        tags = {"kfp_run_id": self.run_id, "kfp_task": self.task, "image": self.image}
        tags |= {f"kfp_input_{k}": v for k, v in self.inputs.items()}
        data = self.data_version()
        if data != UNKNOWN:
            tags["kfp_data_version"] = data
        return tags

    def run_tags(self, stage: str | None) -> dict[str, str]:
        """Run id, task, image, input and output artifact URIs, data version."""
        return self._common() | {f"kfp_output_{k}": v for k, v in self.outputs.items()}

    def version_tags(self) -> dict[str, str]:
        """What a registered version carries instead of a ``dvc.lock`` hash."""
        return self._common()

    def train_stage(self, model_dir: str | Path) -> str | None:
        """No DVC stage inside a pipeline: the model's producer is named by its artifact URI instead."""
        return None

    def data_version(self, stage: str | None = None) -> str:
        """A digest of this task's ``data``/``features``/``models`` input URIs, or ``"unknown"``."""
        used = {k: v for k, v in self.inputs.items() if k in DATA_INPUTS}
        return _digest(used) if used else UNKNOWN

    def train_run_id(self, client: Any, experiment: str, task: str, model_dir: str | Path) -> str | None:
        """The MLflow run of this pipeline run whose task wrote the ``model`` input artifact."""
        uri = self.inputs.get("model")
        exp = client.get_experiment_by_name(experiment)
        if not uri or exp is None:
            return None
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.kfp_run_id = '{self.run_id}' and tags.kfp_output_model = '{uri}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None


def _json_map(text: str | None) -> dict[str, str]:
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def provenance_source(root: str | Path | None = None) -> DvcProvenance | KfpProvenance:
    """The provenance source of this process: Kubeflow inside a pipeline task, else DVC at ``root``."""
    if os.environ.get(KFP_RUN_ENV):
        return KfpProvenance()
    from vlpeft.tracking.preflight import project_root

    return DvcProvenance(root if root is not None else project_root())


def provenance_tags(stage: str | None, cwd: str | Path | None = None) -> dict[str, str]:
    """Tags every run carries: stage, git commit + dirty flag (also MLflow's own source tag) and the data
    provenance of ``provenance_source`` (DVC stage + data hash, or the Kubeflow run, task, image and inputs).

    ``cwd`` is the project directory (default: the project root above the current directory), where git runs
    and ``dvc.lock`` is read.
    """
    from vlpeft.tracking.preflight import project_root

    root = Path(cwd) if cwd is not None else project_root()
    commit = git_commit(root)
    dirty = git_dirty(root)
    tags = {
        "git_commit": commit,
        "git_dirty": UNKNOWN if dirty is None else str(dirty).lower(),
        "mlflow.source.git.commit": commit,
    }
    if stage:
        tags["stage"] = stage
    return tags | provenance_source(root).run_tags(stage)
