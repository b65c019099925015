"""The ``summary`` stage: each task's variants, mean ± std over seeds, image and routing gains, from what the
train runs wrote (no scoring of its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError
from vlpeft.io import check_writable
from vlpeft.stages.declare import StageDecl

# Both summaries read only the runs' files (which runs exist is the train stages' outputs), no params.
STAGE = StageDecl(
    name="summary", module=__name__, cli="vlpeft.cli.report", reads=(), functions=("add_run", "summary")
)
MULTITASK_STAGE = StageDecl(name="multitask-summary", module=__name__, cli="vlpeft.cli.multitask", reads=())


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
