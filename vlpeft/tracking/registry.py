"""MLflow model registry: register a trained model as a pyfunc, read versions by alias, promote.

A registered version carries tags ``task``, ``tasks`` (what the model was trained on: the task itself, or a
multi-task model's tasks), ``method``, ``sharing``, ``routing``, ``rank``, ``metric.<name>`` (the task's
``tag_metrics``, ``vlpeft.tasks``), ``params_trainable``, ``data_version`` (DVC hash, or on Kubeflow a digest
of the input artifact URIs, with ``kfp_run_id``, ``kfp_task``, ``image`` and ``kfp_input_*`` tags),
``code_version`` (git commit), ``run_id`` and ``content_hash`` (sha256 of the model package:
``vlpeft.tracking.packaging.content_hash``); aliases are ``challenger`` (the newest registration) and
``champion`` (the one in use; set on the first registration, then only by ``promote``). Stages are not used
(deprecated since MLflow 2.9).

One version per distinct checkpoint: registering a model whose package has the content hash of an existing
version of the same registered model creates no version (and no run); that version becomes the challenger
again and is returned with ``existing=True`` (a ``dvc repro`` after a review re-registers nothing).

A version stores data only (the package) and names its loader, ``vlpeft.tracking.pyfunc_model``, which is
imported from the installed vlpeft: registry write access never means code execution
(``load_registered`` reads a version as files; see ``vlpeft.tracking.pyfunc_model``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from vlpeft.errors import TrackingError
from vlpeft.tasks import PyfuncSpec, TaskSpec, get_task
from vlpeft.tracking.preflight import check_tracking, project_root, quiet_mlflow_env, tracking_uri
from vlpeft.tracking.provenance import UNKNOWN, git_commit, git_dirty, provenance_source

CHAMPION = "champion"
CHALLENGER = "challenger"
LOADER_MODULE = "vlpeft.tracking.pyfunc_model"
HASH_TAG = "content_hash"
HISTORY = "history/"  # registration-run metrics holding the training history (curves), not results


@dataclass
class VersionInfo:
    """One registered model version as the review and the CLI need it."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    existing: bool = False  # register_model: the checkpoint was already this version (nothing new created)


def pip_requirements() -> list[str]:
    """Pinned requirements of a registered model (explicit: MLflow's inference costs seconds per model)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "torch", "transformers", "peft", "tokenizers", "safetensors", "pillow", "numpy"]
    names += ["pandas", "pydantic", "pyyaml"]
    reqs = []
    for name in names:
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")  # '2.13.0+cpu' is not a pip pin
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def numeric_metrics(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics JSON as ``{"perAnswerType.yes/no": 71.2, ...}`` (null/text skipped)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(numeric_metrics(value, f"{prefix}{key}."))
    elif isinstance(data, bool):
        pass
    elif isinstance(data, int | float):
        out[prefix[:-1]] = float(data)
    return out


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics of a metrics JSON; the official test metrics of ``train_task``'s file come unprefixed.

    ``{"test": {"overall": 71.0, ...}, "val": {"best": ...}}`` gives ``overall``, ``val.best``, ...; an
    ``evaluate`` output (``{"overall": ..., "perAnswerType": {...}}`` or ``{"CIDEr": ...}``) stays as it is.
    """
    test = metrics.get("test") if isinstance(metrics, dict) else None
    if not isinstance(test, dict):
        return numeric_metrics(metrics)
    rest = {k: v for k, v in metrics.items() if k != "test"}
    return {**numeric_metrics(rest), **numeric_metrics(test)}


def latest_run_id(client: Any, experiment: str, stage: str, dvc: bool = False) -> str | None:
    """The newest finished run of ``stage`` (a ``dvc_stage`` tag if ``dvc``) in ``experiment``."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    tag = "dvc_stage" if dvc else "stage"
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.{tag} = '{stage}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


_CHECKED: set[str] = set()


def _code_version() -> str:
    """The git commit of the project being run, else of the checkout vlpeft was imported from."""
    import vlpeft

    commit = git_commit()
    return commit if commit != UNKNOWN else git_commit(Path(vlpeft.__file__).parent)


def _client(uri: str | None) -> tuple[Any, str]:
    quiet_mlflow_env()
    uri = uri or tracking_uri()
    if uri not in _CHECKED:  # one preflight per store and process
        _CHECKED.add(check_tracking(uri))
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _version_info(client: Any, mv: Any) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        tags=dict(mv.tags or {}),
        aliases=list(getattr(mv, "aliases", []) or []),
    )


def version_by_alias(name: str, alias: str, uri: str | None = None) -> VersionInfo | None:
    """The version of ``name`` that ``alias`` points at, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    client, _ = _client(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return _version_info(client, mv)


def _signature(spec: PyfuncSpec) -> Any:
    """The pyfunc's input and output columns (all text: images travel as base64)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string", c, required=c not in spec.optional) for c in spec.inputs]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("string", spec.output)]))


def example_image_b64(size: int = 32) -> str:
    """A small PNG (a red square on grey), base64: the image of every logged input example."""
    import base64
    import io

    from PIL import Image

    image = Image.new("RGB", (size, size), (128, 128, 128))
    image.paste((200, 30, 30), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def input_example(spec: PyfuncSpec, task: str) -> Any:
    """A one-row request of the pyfunc's columns (logged with each model: MLflow shows it and checks that the
    model answers it). ``task`` is the example's task column for multi-task models."""
    import pandas as pd

    values = {
        "task": task,
        "image": example_image_b64(),
        "image2": "",
        "question": "what color is the square?",
    }
    return pd.DataFrame({c: [values.get(c, "")] for c in spec.inputs})


def seed_tags(spec: TaskSpec, run: str | Path) -> dict[str, str]:
    """Version tags on the seed-to-seed spread of ``run``'s variant: ``seeds`` (how many finished runs of the
    same task, variant and learning rate lie beside it, itself included) and, with two or more, the mean and
    standard deviation (ddof 1) over them of each tag metric (``metric_mean.<key>``, ``metric_std.<key>``).

    Runs are recognised by their ``metrics.json`` (``task``, ``variant``, ``train.lr``), as ``selected_run``
    does. The review's verdict weighs differences against this spread.
    """
    import statistics

    from vlpeft.io import read_json

    run = Path(run)
    mine = read_json(run / "metrics.json", "train metrics")
    key = (mine.get("task"), mine.get("variant"), (mine.get("train") or {}).get("lr"))
    values: list[dict[str, float]] = []
    for path in sorted(run.parent.glob("*/metrics.json")):
        other = read_json(path, "train metrics")
        if (other.get("task"), other.get("variant"), (other.get("train") or {}).get("lr")) == key:
            values.append(headline_metrics(other))
    tags = {"seeds": str(len(values))}
    if len(values) >= 2:
        for name in tag_metrics(spec, values[0]):
            metric = name[len("metric.") :]
            series = [v[metric] for v in values if metric in v]
            if len(series) == len(values):
                tags[f"metric_mean.{metric}"] = f"{statistics.fmean(series):.4f}"
                tags[f"metric_std.{metric}"] = f"{statistics.stdev(series):.4f}"
    return tags


def existing_version(client: Any, name: str, digest: str) -> Any | None:
    """The oldest version of ``name`` tagged with content hash ``digest``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and tags.{HASH_TAG} = '{digest}'")
    except MlflowException:  # no such registered model yet
        return None
    return min(found, key=lambda mv: int(mv.version)) if found else None


def tag_metrics(spec: TaskSpec, flat: dict[str, float]) -> dict[str, str]:
    """``metric.<key>`` version tags of the flat metrics that match the task's ``tag_metrics`` patterns."""
    keep = [k for k in flat if any(fnmatchcase(k, pattern) for pattern in spec.tag_metrics)]
    return {f"metric.{k}": f"{flat[k]:.4f}" for k in keep}


def register_model(
    task: str,
    model_dir: str | Path,
    metrics: dict[str, Any],
    name: str,
    *,
    experiment: str = "vlpeft",
    uri: str | None = None,
    history: list[dict[str, Any]] | None = None,
    data_hash: str | None = None,
    train_run_id: str | None = None,
    param_report: dict[str, Any] | None = None,
    spread: dict[str, str] | None = None,
) -> VersionInfo:
    """Log ``model_dir`` as a pyfunc model in a ``register@<task>`` run and register it as ``name``.

    The new version gets alias ``challenger``, and ``champion`` too when the model has no champion yet. A
    checkpoint already registered under ``name`` (same content hash) is not registered again: its version is
    returned with ``existing=True`` and becomes the challenger.
    ``metrics`` (a metrics JSON) go to the run and, for the headline ones, to version tags; ``history`` (a
    list of per-epoch/step records) is logged as ``history/<name>`` metrics so the review can draw curves.
    ``spread`` (``seed_tags``) says how many seeds the variant has and their spread (default: one seed).
    """
    from vlpeft.tracking.packaging import content_hash, package_model, read_meta

    spec = get_task(task)
    if spec.pyfunc is None:
        raise TrackingError(f"task {task}: registering its models is not supported (no pyfunc)")
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    if meta["task"] != spec.family:  # save_vl_model records the model family (vqa, caption, generative)
        family = meta["task"]
        raise TrackingError(
            f"{model_dir}: a {family!r}-family model; task {task} needs a {spec.family!r} one"
        )
    client, uri = _client(uri)
    peft = meta.get("peft") or {}
    flat = headline_metrics(metrics)
    if param_report is None:  # train_task's metrics.json has it; else count (loads the model: seconds)
        given = metrics.get("model") if isinstance(metrics, dict) else None
        param_report = given if isinstance(given, dict) else model_param_report(model_dir)
    # The stage that wrote the model names its data and its training run: the DVC stage (``train@vqa-best``)
    # in dvc.lock, or on Kubeflow the task whose output artifact the model is.
    source = provenance_source(project_root())
    train_stage = source.train_stage(model_dir)
    if train_run_id is None:
        train_run_id = source.train_run_id(client, experiment, task, model_dir)
    data_hash = data_hash or source.data_version(train_stage or f"train@{task}")
    tags = {
        "task": task,
        "tasks": ",".join(peft.get("tasks") or [task]),
        "method": str(peft.get("method", UNKNOWN)),
        "sharing": str(peft.get("sharing", UNKNOWN)),
        "routing": str(peft.get("routing", UNKNOWN)),
        "rank": str(peft.get("rank", UNKNOWN)),
        "data_version": data_hash,
        "code_version": _code_version(),
        "code_dirty": str(git_dirty()).lower(),
        "model_dir": str(model_dir),
    }
    if param_report:
        tags |= {
            f"params_{k}": str(param_report[k])
            for k in ("trainable", "total", "percent")
            if k in param_report
        }
    if train_run_id:
        tags["train_run_id"] = train_run_id
    if train_stage:
        tags["train_stage"] = train_stage
    tags |= source.version_tags()
    tags |= tag_metrics(spec, flat)
    tags |= spread or {"seeds": "1"}

    with tempfile.TemporaryDirectory(prefix="vlpeft-register-") as tmp:
        package = package_model(model_dir, Path(tmp) / "package")
        tags[HASH_TAG] = content_hash(package)
        found = existing_version(client, name, tags[HASH_TAG])
        if found is not None:  # the same checkpoint: no new version, no run; it is the challenger again
            for key, value in (spread or {}).items():  # more seeds may have been trained since
                client.set_model_version_tag(name, str(found.version), key, value)
            client.set_registered_model_alias(name, CHALLENGER, str(found.version))
            result = _version_info(client, client.get_model_version(name, str(found.version)))
            result.aliases, result.existing = aliases_of(name, result.version, uri), True
            return result
        return _log_and_register(
            task, spec, name, package, meta, peft, flat, metrics, history, tags, client, experiment, uri
        )


def _log_and_register(
    task: str,
    spec: TaskSpec,
    name: str,
    package: Path,
    meta: dict[str, Any],
    peft: dict[str, Any],
    flat: dict[str, float],
    metrics: dict[str, Any],
    history: list[dict[str, Any]] | None,
    tags: dict[str, str],
    client: Any,
    experiment: str,
    uri: str,
) -> VersionInfo:
    """The ``register@<task>`` run that logs ``package`` as a pyfunc, and the new version of ``name``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from vlpeft.tracking.mlflow import MlflowTracker

    assert spec.pyfunc is not None  # checked by register_model
    tracker = MlflowTracker(f"register@{task}", experiment=experiment, uri=uri, tags=tags)
    with tracker:
        tracker.log_params({"model": meta.get("model", {}), "peft": peft, "task": task})
        tracker.log_metrics(flat)
        tracker.log_text(json.dumps(metrics, indent=2), "metrics.json")
        for i, record in enumerate(history or []):
            step = int(record.get("step", record.get("epoch", i)))
            values = {
                f"{HISTORY}{k}": v for k, v in numeric_metrics(record).items() if k not in ("step", "epoch")
            }
            tracker.log_metrics(values, step=step)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            with mlflow.start_run(run_id=tracker.run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    loader_module=LOADER_MODULE,  # imported from the installed vlpeft, never stored
                    data_path=str(package),
                    # declared so that a local process may override it at load time (never a request)
                    model_config={"allow_local_paths": False},
                    pip_requirements=pip_requirements(),
                    signature=_signature(spec.pyfunc),
                    input_example=input_example(spec.pyfunc, (peft.get("tasks") or ["vqa"])[0]),
                )
            mv = client.create_model_version(
                name=_ensure_registered(client, name, task), source=info.model_uri, run_id=tracker.run_id,
                tags=tags, model_id=info.model_id,
            )  # fmt: skip
        except MlflowException as exc:
            raise TrackingError(f"tracking URI {uri}: registering {name} failed ({exc.message})") from None
        version = str(mv.version)
        client.set_registered_model_alias(name, CHALLENGER, version)
        if version_by_alias(name, CHAMPION, uri) is None:
            client.set_registered_model_alias(name, CHAMPION, version)
        tracker.set_tags({"registered_model": name, "registered_version": version})
    result = _version_info(client, client.get_model_version(name, version))
    result.aliases = aliases_of(name, version, uri)
    return result


def _ensure_registered(client: Any, name: str, task: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description=f"vlpeft {task} model (pyfunc, aliases {CHAMPION}/{CHALLENGER})"
            )
        except MlflowException:  # registered concurrently
            client.get_registered_model(name)
    return name


def aliases_of(name: str, version: str, uri: str | None = None) -> list[str]:
    """The aliases pointing at ``version`` (read from the registered model: search omits them)."""
    client, _ = _client(uri)
    aliases = client.get_registered_model(name).aliases or {}
    return sorted(a for a, v in aliases.items() if str(v) == str(version))


def promote(name: str, uri: str | None = None) -> dict[str, Any]:
    """Point ``champion`` at the ``challenger`` version; returns what changed (versions and metric deltas)."""
    client, uri = _client(uri)
    challenger = version_by_alias(name, CHALLENGER, uri)
    if challenger is None:
        raise TrackingError(f"registered model {name!r} has no {CHALLENGER!r} version at {uri}")
    champion = version_by_alias(name, CHAMPION, uri)
    before = champion.version if champion else None
    deltas = {}
    for key, value in challenger.tags.items():
        if key.startswith("metric.") and champion and key in champion.tags:
            deltas[key[len("metric.") :]] = (float(champion.tags[key]), float(value))
    if before != challenger.version:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
    return {
        "name": name,
        "previous_champion": before,
        "champion": challenger.version,
        "changed": before != challenger.version,
        "metrics": deltas,
    }


def model_param_report(model_dir: str | Path) -> dict[str, Any] | None:
    """``param_report`` of the saved model (trainable/total/percent), or None if it cannot be loaded here."""
    try:
        from vlpeft.models import load_vl_model, param_report

        report = param_report(load_vl_model(model_dir))
    except Exception:  # the review shows "?" rather than failing a registration
        return None
    return {k: report[k] for k in ("trainable", "total", "percent") if k in report}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Per-epoch/step records from a training history file for the registration run's curves.

    Accepts a JSON list of records, ``{"history": [...]}``, a DVC plots JSON (``{name: [records]}``, merged by
    step/epoch) or a CSV/TSV with a header row. Each record holds ``step`` or ``epoch`` plus numbers.
    """
    import csv

    from vlpeft.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: history file not found")
    if path.suffix in (".csv", ".tsv"):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))
        return [{k: _number(v) for k, v in row.items()} for row in rows]
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("history"), list):
        data = data["history"]
    if isinstance(data, dict):  # DVC plots style: merge the series by their step/epoch
        merged: dict[Any, dict[str, Any]] = {}
        for series in data.values():
            for i, rec in enumerate(series if isinstance(series, list) else []):
                if isinstance(rec, dict):
                    key = rec.get("step", rec.get("epoch", i))
                    merged.setdefault(key, {}).update(rec)
        data = [merged[k] for k in sorted(merged, key=str)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of records (one per epoch or step)")
    return data


def _number(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def load_registered(model_uri: str, uri: str | None = None, allow_local_paths: bool = False) -> Any:
    """The pyfunc (``VlpeftPyfunc``) of a registered version or logged model, e.g. ``models:/x@champion``.

    The version's files are downloaded and read as data with the installed vlpeft: nothing stored with the
    version is imported or executed (versions logged as models from code keep their package under
    ``artifacts/model``, which is read the same way). ``TrackingError`` for an unknown URI.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from vlpeft.tracking.packaging import find_package
    from vlpeft.tracking.pyfunc_model import VlpeftPyfunc

    _, uri = _client(uri)
    with tempfile.TemporaryDirectory(prefix="vlpeft-registered-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp, tracking_uri=uri)
        except MlflowException as exc:
            raise TrackingError(f"{model_uri}: not found at tracking URI {uri} ({exc.message})") from None
        return VlpeftPyfunc(find_package(local), allow_local_paths=allow_local_paths)
