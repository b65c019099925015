"""Where the time of a ``dvc repro`` / ``make run`` goes: every stage's MLflow run start and end.

Each pipeline stage is one top-level MLflow run (sweep trials are nested under their study run), so the
tracking store holds when each stage's work started and ended; the gaps between runs are process start-up,
imports and DVC's own bookkeeping. Prints one JSON object: per stage its seconds and the gap before it, and
the span from the first run's start to the last run's end. ``--since`` keeps only runs that started at or
after a UNIX time (e.g. the start of the ``make run`` being measured).

    .venv/bin/python bench/bench_run_stages.py [--project DIR] [--since UNIX_SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def stage_runs(uri: str, experiment: str, since_ms: int) -> list[dict]:
    """Top-level finished runs of ``experiment`` started at or after ``since_ms``, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"{uri}: no experiment {experiment!r}")
    runs = client.search_runs([exp.experiment_id], max_results=5000, order_by=["attributes.start_time ASC"])
    out = []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags or run.info.start_time < since_ms or not run.info.end_time:
            continue
        out.append(
            {
                "stage": tags.get("dvc_stage") or tags.get("stage") or run.info.run_name,
                "start_ms": run.info.start_time,
                "end_ms": run.info.end_time,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."), help="project dir holding mlflow.db")
    ap.add_argument("--uri", default=None, help="tracking URI (default: sqlite:///<project>/mlflow.db)")
    ap.add_argument("--experiment", default="vlpeft")
    ap.add_argument("--since", type=float, default=0.0, help="UNIX seconds: only runs started after it")
    args = ap.parse_args()
    uri = args.uri or f"sqlite:///{(args.project / 'mlflow.db').resolve()}"
    runs = stage_runs(uri, args.experiment, int(args.since * 1000))
    if not runs:
        raise SystemExit(f"{uri}: no finished top-level runs")
    stages, previous_end = [], None
    for run in runs:
        gap = None if previous_end is None else round((run["start_ms"] - previous_end) / 1000, 1)
        stages.append({"stage": run["stage"], "seconds": round((run["end_ms"] - run["start_ms"]) / 1000, 1),
                       "gap_before_s": gap})  # fmt: skip
        previous_end = run["end_ms"]
    inside = sum(s["seconds"] for s in stages)
    span = (runs[-1]["end_ms"] - runs[0]["start_ms"]) / 1000
    by_kind: dict[str, float] = {}
    for s in stages:
        kind = s["stage"].split("@")[0]
        by_kind[kind] = round(by_kind.get(kind, 0.0) + s["seconds"], 1)
    print(json.dumps({
        "tracking_uri": uri,
        "stages": stages,
        "seconds_by_stage_kind": by_kind,
        "seconds_in_stages": round(inside, 1),
        "seconds_between_stages": round(span - inside, 1),
        "span_s": round(span, 1),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15": os.getloadavg(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
