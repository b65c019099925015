"""One function per pipeline stage: ``(params, input paths, output paths, tracker) -> result``.

The CLI (and through it every ``dvc.yaml`` stage) and the Kubeflow components (``components/``) call these
functions, so a DVC run and a Kubeflow run of the same params do the same work and give the same numbers.
This module is the only code that joins parameter values with paths; it holds no argument parsing and no
Kubeflow code.

``tracker`` is optional everywhere: ``None`` means "the stage's own tracker, chosen from ``params.tracking``"
(``stage_tracker``); tests pass a ``NullTracker``.

Backbone paths: the embedded world's params name the pretrained backbones ``models/<part>`` (the pretrain
stage's output dir under the project root). Where that dir lives elsewhere (a Kubeflow ``Model`` artifact),
stages take ``models=<dir>`` and read ``models/<part>`` as ``<dir>/<part>`` (``localize_backbones``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlpeft.config import Params, Task, flatten
from vlpeft.errors import ConfigError, DataError
from vlpeft.io import check_writable
from vlpeft.tracking.base import NullTracker, Tracker

PRETRAIN_DIR = "models"  # what params call the pretrain stage's output (model.vision: models/vit, ...)
BACKBONE_FIELDS = ("vision", "vqa_backbone", "caption_backbone", "generative_backbone")


# ------------------------------------------------------------------------------------------- helpers


def check_task(task: str) -> Task:
    """``task`` if it is a task of the table (``vlpeft.tasks``), else a one-line ``ConfigError``."""
    from vlpeft.tasks import get_task

    return get_task(task, what="--task").name


def stage_tracker(params: Params, stage: str, tags: dict[str, str] | None = None) -> Any:
    """The tracker of one stage execution (a context manager): MLflow per ``params.tracking``, or none.

    Under ``torchrun`` only rank 0 tracks; the other ranks get a ``NullTracker``.
    """
    from vlpeft.tracking.session import open_tracker

    if int(os.environ.get("RANK", "0")) != 0:
        return NullTracker()
    return open_tracker(params, stage, tags=tags)


@contextlib.contextmanager
def _tracked(params: Params, stage: str, tracker: Tracker | None, **tags: str) -> Iterator[Tracker]:
    """``tracker`` as given (the caller owns it), or the stage's own, opened and closed here."""
    if tracker is not None:
        yield tracker
        return
    with stage_tracker(params, stage, tags or None) as own:
        yield own


def log_results(tracker: Tracker, metrics: Mapping[str, Any], *artifacts: Path) -> None:
    """Report a stage's numeric results (flattened) and the artifacts that exist to ``tracker``."""
    numbers = {
        k: float(v)
        for k, v in flatten(dict(metrics)).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    tracker.log_metrics(numbers)
    for path in artifacts:
        if Path(path).exists():
            tracker.log_artifact(path)


def localize_backbones(params: Params, models: str | Path | None) -> Params:
    """``params`` with backbones named ``models/<part>`` read from ``models`` (the pretrain output) instead.

    ``None`` leaves the params as they are (DVC: the project root holds ``models/``). Hub ids and other
    paths are never touched.
    """
    if models is None:
        return params
    update = {}
    for name in BACKBONE_FIELDS:
        value = getattr(params.model, name)
        parts = Path(value).parts if value else ()
        if len(parts) >= 2 and parts[0] == PRETRAIN_DIR and not Path(value).is_absolute():
            update[name] = str(Path(models, *parts[1:]))
    if not update:
        return params
    return params.model_copy(update={"model": params.model.model_copy(update=update)})


def uses_pretrain(params: Params, tasks: Sequence[str] | None = None) -> bool:
    """True when the vision encoder or the backbone of one of ``tasks`` (default ``sweep.tasks``) is one of
    the pretrain stage's outputs (the embedded world)."""
    from vlpeft.tasks import get_task

    fields = ["vision"] + [get_task(t).backbone_field for t in (tasks or params.sweep.tasks)]
    return any((v := getattr(params.model, f)) and Path(v).parts[:1] == (PRETRAIN_DIR,) for f in fields)


# ---------------------------------------------------------------------------------------------- data


def data(
    params: Params,
    *,
    out: str | Path,
    raw: str | Path | None = None,
    link: str = "symlink",
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``data`` stage: the synthetic world (``data.source: synthetic``) or COCO/VQAv2 from ``raw``.

    Returns ``{"counts", "seconds"?}``; ``out`` is replaced atomically.
    """
    check_writable(out)
    out = Path(out)
    if params.data.source == "synthetic":
        from vlpeft.data.synth import generate_world

        with _tracked(params, "data", tracker) as t:
            world = generate_world(params.world, out, seed=params.seed)
            log_results(t, {"counts": world["counts"], "seconds": world["seconds"]}, out / "world.json")
        return world
    if raw is None:
        raise ConfigError("data.source coco: pass the directory with the downloads (--raw)")
    from vlpeft.data.prepare import prepare_coco

    with _tracked(params, "data", tracker) as t:
        info = prepare_coco(raw, out, link=link)
        log_results(t, {"counts": info["counts"]}, out / "world.json")
    return info


def synth(
    params: Params, *, out: str | Path, seed: int | None = None, tracker: Tracker | None = None
) -> dict:
    """The synthetic world with an explicit ``seed`` (default ``params.seed``); see ``data``."""
    if seed is not None:
        params = params.model_copy(update={"seed": seed})
    return data(params.model_copy(update={"data": params.data.model_copy(update={"source": "synthetic"})}),
                out=out, tracker=tracker)  # fmt: skip


# ----------------------------------------------------------------------------------- pretrain/features


def pretrain(
    params: Params,
    *,
    data: str | Path,
    out: str | Path,
    metrics: str | Path | None = None,
    headline: str | Path | None = None,
    parts: Sequence[str] | None = None,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``pretrain`` stage: tokenizer + tiny ViT / RoBERTa / GPT-2 of the embedded world under ``out``.

    ``metrics`` gets every figure of every part; ``headline`` the flat health figures (``health_metrics``:
    the DVC metrics file locally, the KFP UI's metrics on Kubeflow). A failed run leaves no stale headline.
    """
    check_writable(out, metrics, headline)
    from vlpeft.io import write_json
    from vlpeft.pretrain import PARTS, pretrain_backbones
    from vlpeft.pretrain.run import health_metrics

    if headline is not None:
        Path(headline).unlink(missing_ok=True)
    with _tracked(params, "pretrain", tracker) as t:
        result = pretrain_backbones(params, data, out, metrics, parts=parts or PARTS)
        if headline is not None:
            write_json(headline, health_metrics(result))
        log_results(t, result, *((Path(metrics),) if metrics else ()))
    return result


def load_encoder(params: Params, encoder: str | None = None, models: str | Path | None = None) -> Any:
    """The frozen vision encoder of the features stage (``encoder`` or ``model.vision``), GPU if any."""
    import torch

    from vlpeft.models.vision import VisionEncoder

    name = encoder or localize_backbones(params, models).model.vision
    enc = VisionEncoder.from_pretrained(
        name, pooling=params.features.pooling, image_size=params.model.image_size
    )
    return enc.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def features(
    params: Params,
    *,
    data: str | Path,
    out: str | Path,
    encoder: str | None = None,
    models: str | Path | None = None,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``features`` stage: the frozen vision encoder once over every image -> the feature store ``out``.

    Returns the store's index (without per-image rows).
    """
    check_writable(out)
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table

    fc = params.features
    enc = load_encoder(params, encoder, models)
    with _tracked(params, "features", tracker) as t:
        meta = extract_features(
            enc,
            image_table(data),
            out,
            kind=fc.kind,
            dtype=fc.dtype,
            batch_size=fc.batch_size,
            shard_size=fc.shard_size,
            extra_provenance={"data_root": str(data)},
            grid_pool=tuple(fc.grid_pool) if fc.grid_pool else None,
        )
        log_results(t, {"images": meta["n_images"], "width": meta["width"]}, Path(out) / "index.json")
    return meta


# --------------------------------------------------------------------------------------------- sweep


def sweep_prepare(
    params: Params,
    task: str,
    *,
    data: str | Path,
    features: str | Path,
    out: str | Path,
    models: str | Path | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
) -> Any:
    """Sweep step 1: create the study and queue its trial slots (and the MLflow parent run).

    Returns a ``vlpeft.sweep.run.SweepSetup`` whose worker specs (``setup.specs``) the workers run; its
    ``spec_template()`` is what a Kubeflow sweep-worker task receives.
    """
    check_writable(out)
    from vlpeft.sweep.run import prepare_sweep

    return prepare_sweep(
        localize_backbones(params, models), check_task(task), data, features, out,
        n_trials=n_trials, timeout=timeout, workers=workers,
    )  # fmt: skip


def sweep_worker(
    spec: str | Path | Any,
    *,
    data: str | Path,
    features: str | Path,
    out: str | Path,
    models: str | Path | None = None,
    worker_index: int = 0,
) -> int:
    """Sweep step 2: one worker runs queued trials of the study in ``spec`` (a ``WorkerSpec`` or its JSON).

    The paths are this worker's own (they differ per pod); the storage URL with its password comes from
    ``$VLPEFT_SWEEP_STORAGE`` when set. Returns the number of trials this worker ran.
    """
    import dataclasses

    from vlpeft.config import params_from_dict, params_to_dict
    from vlpeft.sweep.worker import WorkerSpec, run_worker

    base = spec if isinstance(spec, WorkerSpec) else WorkerSpec.load(spec)
    params = localize_backbones(params_from_dict(base.params, "sweep worker spec"), models)
    mine = dataclasses.replace(
        base,
        params=params_to_dict(params),
        data_root=str(Path(data).resolve()),
        features_dir=str(Path(features).resolve()),
        out_dir=str(Path(out).resolve()),
        worker_index=worker_index,
    )
    return run_worker(mine)


def sweep_finish(params: Params, task: str, *, out: str | Path, setup: Any = None) -> dict[str, Any]:
    """Sweep step 3: best params, tables, plots and the summary of the finished study, written to ``out``.

    ``setup`` is the ``sweep_prepare`` result when the same process prepared the study (locally); without
    it the study and its MLflow parent run are found again from ``params`` (a separate Kubeflow task).
    """
    from vlpeft.sweep.run import finish_sweep

    return finish_sweep(params, check_task(task), out, setup=setup)


def sweep(
    params: Params,
    task: str,
    *,
    data: str | Path,
    features: str | Path,
    out: str | Path,
    models: str | Path | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    add_trials: int | None = None,
) -> dict[str, Any]:
    """The whole sweep on this machine: prepare -> local worker processes -> finish (``vlpeft sweep``).

    ``add_trials`` adds that many trials to the study (an existing one is extended, as Optuna users expect);
    without it the study is topped up to ``n_trials`` (default ``sweep.n_trials``).
    """
    check_writable(out)
    from vlpeft.sweep.run import run_sweep

    return run_sweep(
        localize_backbones(params, models), check_task(task), data, features, out,
        n_trials=n_trials, timeout=timeout, workers=workers, add_trials=add_trials,
    )  # fmt: skip


# --------------------------------------------------------------------------------------- train/eval


def train(
    params: Params,
    task: str,
    *,
    data: str | Path,
    out: str | Path,
    features: str | Path | None = None,
    models: str | Path | None = None,
    variant: str | None = None,
    seed: int | None = None,
    sweep_best: str | Path | None = None,
    headline: str | Path | None = None,
    resume: bool = False,
    evaluate_test: bool = True,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``train`` stage: one task trained, validated, checkpointed and scored on the test split.

    ``sweep_best`` (the sweep's ``best_params.json``), the ``variant`` of params' ``variants:`` table and the
    training ``seed`` are applied in that order (``vlpeft.variants.resolve_variant``). ``headline`` also gets
    the flat headline test figures. Returns the flattened metrics (``test.overall``, ``val.best``, ...).
    """
    check_writable(out, headline)
    from vlpeft.train.run import train_task

    task = check_task(task)
    if variant is not None or seed is not None or sweep_best is not None:
        from vlpeft.sweep.best import load_best_params
        from vlpeft.variants import resolve_variant

        best = load_best_params(sweep_best) if sweep_best is not None else None
        params = resolve_variant(params, task, variant, seed, best)
    params = localize_backbones(params, models)
    tags = {"task": task, "seed": str(params.task(task).seed), **({"variant": variant} if variant else {})}
    with _tracked(params, f"train@{task}", tracker, **tags) as t:
        return train_task(params, task, data, features, out, tracker=t, resume=resume,
                          evaluate_test=evaluate_test, headline_out=headline, variant=variant)  # fmt: skip


def ground_truth(task: str, data: str | Path, split: str = "test") -> dict[str, Path]:
    """The official ground-truth files of ``split`` in the data layout (VQA questions + annotations, COCO)."""
    from vlpeft.data.formats import annotations_path, captions_path, questions_path

    root = Path(data)
    if check_task(task) == "vqa":
        return {"questions": questions_path(root, split), "annotations": annotations_path(root, split)}
    return {"annotations": captions_path(root, split)}


def evaluate(
    params: Params,
    task: str,
    *,
    predictions: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    questions: str | Path | None = None,
    annotations: str | Path | None = None,
    per_item: str | Path | None = None,
) -> dict[str, Any]:
    """The ``evaluate`` stage: official VQA accuracy or COCO caption metrics of a predictions file -> ``out``.

    Ground truth: the explicit files, else the test split of ``data``. Returns the metrics JSON's content.
    """
    check_writable(out, per_item)
    from vlpeft.eval.files import evaluate_caption_files, evaluate_vqa_files

    task = check_task(task)
    gt = ground_truth(task, data) if data is not None else {}
    if task == "vqa":
        q, a = questions or gt.get("questions"), annotations or gt.get("annotations")
        if q is None or a is None:
            raise ConfigError("evaluate vqa: pass --questions and --annotations (or the data root)")
        m = evaluate_vqa_files(Path(q), Path(a), Path(predictions), Path(out),
                               per_question_out=Path(per_item) if per_item else None,
                               revision=params.evaluate.vqa_revision)  # fmt: skip
        return m.to_json()
    a = annotations or gt.get("annotations")
    if a is None:
        raise ConfigError("evaluate caption: pass --annotations (or the data root)")
    metrics = evaluate_caption_files(Path(a), Path(predictions), Path(out),
                                     per_image_out=Path(per_item) if per_item else None,
                                     spice=params.evaluate.spice, meteor=params.evaluate.meteor)  # fmt: skip
    return metrics.to_json()


# ------------------------------------------------------------------------------------------ summary


def summary(
    metrics_dir: str | Path,
    *,
    out_json: str | Path,
    out_md: str | Path,
    plot: str | Path | None = None,
    runs_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The ``summary`` stage: each task's variants, mean ± std over seeds, image and routing gains.

    Reads the DVC layout (``vlpeft.eval.compare.read_runs``): ``<metrics_dir>/<task>-<variant>-<seed>.json``
    headline metrics and, optionally, ``<runs_dir>/<same name>/metrics.json`` (what each variant trained).
    Writes the summary JSON, the Markdown table and (if ``plot``) the chart; returns
    ``{"summaries", "markdown"}``.
    """
    check_writable(out_json, out_md, plot)
    from vlpeft.eval.compare import read_runs, summarize, to_markdown, write_plot
    from vlpeft.io import write_json, write_text

    runs, settings = read_runs(Path(metrics_dir), Path(runs_dir) if runs_dir is not None else None)
    if not runs:
        raise DataError(f"{metrics_dir}: no <task>-<variant>-<seed>.json metrics files found")
    summaries = {task: summarize(task, runs[task], settings.get(task)) for task in runs}
    write_json(out_json, summaries)
    text = "# Results\n\n" + "\n".join(to_markdown(s) for s in summaries.values())
    write_text(out_md, text)
    if plot is not None:
        write_plot(summaries, runs, Path(plot))
    return {"summaries": summaries, "markdown": text}


def add_run(
    runs_in: str | Path | None,
    run: str,
    *,
    headline: Mapping[str, Any],
    train_metrics: str | Path | None,
    out: str | Path,
) -> Path:
    """Copy the run collection ``runs_in`` (None: empty) to ``out`` and add one final run in the summary's
    layout: ``out/metrics/<run>.json`` (headline figures), ``out/runs/<run>/metrics.json`` (what was trained).

    How a pipeline without a shared directory builds the summary's input one run at a time.
    """
    check_writable(out)
    import shutil

    from vlpeft.io import write_json

    out = Path(out)
    if runs_in is not None and Path(runs_in).is_dir():
        shutil.copytree(runs_in, out, dirs_exist_ok=True)
    write_json(out / "metrics" / f"{run}.json", dict(headline))
    if train_metrics is not None and Path(train_metrics).is_file():
        (out / "runs" / run).mkdir(parents=True, exist_ok=True)
        shutil.copy2(train_metrics, out / "runs" / run / "metrics.json")
    return out


# --------------------------------------------------------------------------------------- registry


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
    if run is not None or runs is not None:
        run = Path(run) if run is not None else selected_run(params, task, runs)
        if not (run / "metrics.json").is_file():
            raise DataError(f"{run}: not a finished train run (no metrics.json)")
        model, metrics = test_model_dir(run), run / "metrics.json"
        history = run / "curves.json" if (run / "curves.json").is_file() else None
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
        )
    record = {"name": result.name, "version": result.version, "aliases": result.aliases,
              "run_id": result.run_id, "source": result.source, "registered": True}  # fmt: skip
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
