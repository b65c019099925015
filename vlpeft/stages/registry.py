"""The ``register`` stage (a train run's test model as an MLflow registry version) and ``review`` (challenger
beside champion).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlpeft.config import Params
from vlpeft.errors import ConfigError, DataError
from vlpeft.io import check_writable
from vlpeft.stages.declare import StageDecl

# register + review: the task's registered name, which variant/seed is registered, how many review samples;
# the model is loaded again for the review's samples (the task's predictor and its PEFT method).
STAGE = StageDecl(
    name="register",
    functions=("register", "review"),
    module=__name__,
    cli="vlpeft.cli.registry",
    reads=("registry.variant", "registry.review_samples", "registry.{task}_name", "seeds", "tracking"),
    entry=("vlpeft.tracking.pyfunc_model",),
    dispatch=("tasks", "methods"),
)


def registered_name(params: Params, task: str) -> str:
    """The registered model name of ``task`` (``params.registry``)."""
    from vlpeft.errors import ConfigError
    from vlpeft.tasks import get_task

    spec = get_task(task)
    if not spec.registrable:
        raise ConfigError(f"task {task}: registering its models is not supported yet")
    return getattr(params.registry, spec.registry_field)


def selected_run(params: Params, task: str, runs: str | Path) -> Path:
    """The train run under ``runs`` to register: ``registry.variant``'s run of ``task`` with seed
    ``seeds[0]``, and when that variant trained several learning rates (hand-run lr searches), at the one the
    multi-task summary keeps (best mean validation average; ``vlpeft.train.multitask.summary``).

    Runs are recognised by their ``metrics.json`` (``task``, ``variant``, ``train.lr``, ``model.seed``), not
    by their directory names (paths belong to dvc.yaml). A missing or ambiguous run is a ``DataError``.
    """
    from vlpeft.io import read_json

    variant, seed = params.registry.variant, params.seeds[0]
    found = {p.parent: read_json(p, "train metrics") for p in sorted(Path(runs).glob("*/metrics.json"))}
    mine = {d: m for d, m in found.items() if m.get("task") == task and m.get("variant") == variant}
    if not mine:
        raise DataError(f"{runs}: no finished {task} run of variant {variant!r} (registry.variant)")
    lrs = {(m.get("train") or {}).get("lr") for m in mine.values()}
    lr = next(iter(lrs))
    if len(lrs) > 1:
        from vlpeft.train.multitask.summary import summary_rows

        rows, _ = summary_rows({d.name: m for d, m in mine.items()})  # one row: this variant's chosen lr
        lr = rows[0]["lr"]
    chosen = [
        d for d, m in mine.items()
        if (m.get("train") or {}).get("lr") == lr and (m.get("model") or {}).get("seed") == seed
    ]  # fmt: skip
    if len(chosen) != 1:
        names = ", ".join(d.name for d in chosen) or "none"
        raise DataError(
            f"{runs}: {len(chosen)} {task} runs of variant {variant!r}, lr {lr}, seed {seed}: {names}"
        )
    return chosen[0]


def test_model_dir(run: str | Path) -> Path:
    """The checkpoint of a train run whose figures its ``metrics.json`` holds (``test_checkpoint``: ``best``
    or ``last``): the one to register, so the version's weights and metrics belong together."""
    from vlpeft.io import read_json

    run = Path(run)
    return run / read_json(run / "metrics.json", "train metrics").get("test_checkpoint", "best")


def register(
    params: Params,
    task: str,
    *,
    model: str | Path | None = None,
    metrics: str | Path | None = None,
    history: str | Path | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    models: str | Path | None = None,
    run: str | Path | None = None,
    runs: str | Path | None = None,
) -> dict[str, Any]:
    """The ``register`` stage: the trained model as a pyfunc version (alias ``challenger``) with its metrics,
    method, routing, rank, data and code version. ``models`` relocates the backbones a model saved in another
    pod references (see ``relocated_model``). Returns (and writes to ``out``) the version record.

    The model is ``model`` with its ``metrics`` (and ``history``) files, or a train run dir: ``run`` itself
    or the ``selected_run`` under ``runs``; of a run, its test checkpoint (``best``/``last``, the one its test
    figures are of), ``metrics.json`` and ``curves.json``.
    """
    check_writable(out)
    from vlpeft.io import read_json, write_json

    name = name or registered_name(params, task)
    by_files = model is not None or metrics is not None
    if [run is not None, runs is not None, by_files].count(True) > 1:
        raise ConfigError("register: pass one of --run, --runs, or --model and --metrics")
    spread = None
    if run is not None or runs is not None:
        run = Path(run) if run is not None else selected_run(params, task, runs)
        if not (run / "metrics.json").is_file():
            raise DataError(f"{run}: not a finished train run (no metrics.json)")
        model, metrics = test_model_dir(run), run / "metrics.json"
        history = run / "curves.json" if (run / "curves.json").is_file() else None
        from vlpeft.tasks import get_task
        from vlpeft.tracking.registry import seed_tags

        spread = seed_tags(get_task(task), run)  # the variant's other seeds beside it: the verdict's noise
    if model is None or metrics is None:
        raise ConfigError("register: pass --model and --metrics (or --runs)")
    if not params.tracking.enabled:
        record: dict[str, Any] = {"name": name, "registered": False}
        if out:
            write_json(out, record)
        return record
    import tempfile

    from vlpeft.tracking.packaging import read_meta
    from vlpeft.tracking.registry import read_history, register_model

    read_meta(model)  # a wrong model dir is a one-line error before anything is logged
    with tempfile.TemporaryDirectory(prefix="vlpeft-register-model-") as tmp:
        local = relocated_model(Path(model), models, Path(tmp)) if models is not None else Path(model)
        result = register_model(
            task,
            local,
            read_json(metrics, "metrics file"),
            name,
            experiment=params.tracking.experiment,
            history=read_history(history) if history else None,
            spread=spread,
        )
    record = {"name": result.name, "version": result.version, "aliases": result.aliases,
              "run_id": result.run_id, "source": result.source, "registered": True,
              "existing": result.existing, "content_hash": result.tags.get("content_hash")}  # fmt: skip
    if out:
        write_json(out, record)
    return record


def relocated_model(model: Path, models: str | Path, work: Path) -> Path:
    """A copy of the small model dir ``model`` whose missing local backbones are read from ``models``.

    A model trained in another pod (or machine) names its backbones by that pod's paths; the backbone with
    the same directory name in ``models`` (the pretrain output here) is the same one. Weights stay in place.
    """
    import json
    import shutil

    from vlpeft.models.persistence import MODEL_FILE

    local = work / "model"
    shutil.copytree(model, local, ignore=shutil.ignore_patterns("trainer"))
    meta = json.loads((local / MODEL_FILE).read_text())
    moved = {}
    for ref in (meta.get("backbones") or {}).values():
        path = str(ref.get("path") or "")
        if not isinstance(ref, dict) or not path or Path(path).exists():
            continue
        candidate = Path(models) / Path(path).name
        if candidate.is_dir():
            moved[path] = ref["path"] = ref["resolved"] = str(candidate)
    for field, value in (meta.get("model") or {}).items():
        if value in moved:
            meta["model"][field] = moved[value]
    (local / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return local


def review(
    params: Params,
    name: str,
    *,
    out: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    samples: int | None = None,
) -> dict[str, Any]:
    """The ``review`` stage: an HTML report and a Markdown summary, challenger beside champion, in ``out``.

    ``data`` is the data root the sample images come from (default ``<data.root>/<data.source>``; skipped
    when absent); ``samples`` (default ``registry.review_samples``) per task the model was trained on.
    Returns ``{"verdict", "html", "markdown"}``.
    """
    check_writable(out)
    from vlpeft.tracking.report import verdict, write_review
    from vlpeft.tracking.review import gather_review

    root = Path(data) if data is not None else Path(params.data.root) / params.data.source
    n = params.registry.review_samples if samples is None else samples
    result = gather_review(name, data_root=root if root.exists() and n > 0 else None, split=split, samples=n)
    paths = write_review(result, out)
    return {"verdict": verdict(result), **{k: Path(v) for k, v in paths.items()}}
