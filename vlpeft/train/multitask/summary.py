"""The multi-task summary table: per task and the Table 1 average, one row per trained variant.

Reads each run's ``metrics.json`` (``train_task``'s file: ``variant``, ``train.lr``, ``model.seed``, the
validation average, ``test.<task>.score``, ``test.average`` and the image-shuffled control
``test_shuffled.<task>.score``). Runs of one variant at several learning rates (variants that differ only in
``task.lr``, or a hand-run search) and seeds are grouped: per variant, the learning rate with the best mean
validation average (the checkpoint the test uses: ``val.last`` for ``test_checkpoint: last``) is kept, and
its test scores are the mean (± sample std) over its seeds. The test split never chooses anything.

Then the controls: per row and task, the gain over the ``blind`` variant (paired by seed) and over the same
runs scored with shuffled images, each as mean ± std; a row whose gain over blind is not larger than its
spread on some task is flagged (``not_above_blind``).

Writes Markdown (the table, the gains and any learning-rate search), JSON, a bar plot and, for
``dvc plots``, the averages as rows. Pure apart from the file reading/writing at the edges."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlpeft.errors import DataError
from vlpeft.io import read_json, write_json, write_text

COLUMNS = (("vqa", "VQA"), ("gqa", "GQA"), ("nlvr", "NLVR2"), ("caption", "CIDEr"))
BLIND = "blind"  # the control variant trained without any image (multitask/params.yaml variants)
SHUFFLED = " shuffled"  # suffix of a score of the image-shuffled control (the same run, other images)


def _validation(name: str, metrics: Mapping[str, Any]) -> float:
    """The validation average of the checkpoint the test used (what selection may look at)."""
    val = metrics.get("val") or {}
    key = "best" if metrics.get("test_checkpoint") == "best" else "last"
    if val.get(key) is None:
        raise DataError(f"{name}: metrics have no validation average (val.{key})")
    return float(val[key])


def _test_scores(name: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Each task's test score, NLVR2 consistency and the average of one run (flat, by column label); with
    the image-shuffled control (``test_shuffled``, ``vlpeft.train.controls``) also ``"<label> shuffled"``."""
    test = metrics.get("test")
    if not isinstance(test, dict) or "average" not in test:
        raise DataError(f"{name}: metrics have no multi-task test scores (test.average)")
    scores = {label: float(test[task]["score"]) for task, label in COLUMNS if task in test}
    if "nlvr" in test and "consistency" in test["nlvr"]:
        scores["NLVR2 consistency"] = float(test["nlvr"]["consistency"])
    scores["average"] = float(test["average"])
    shuffled = metrics.get("test_shuffled")
    if isinstance(shuffled, dict):
        for task, label in COLUMNS:
            if task in shuffled:
                scores[label + SHUFFLED] = float(shuffled[task]["score"])
    return scores


def group_runs(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[float | None, dict[str, Any]]]:
    """``{variant: {lr: {"runs": [names], "val": [..], "scores": [{label: score}], "model": {...}}}}``.

    A run without a recorded ``variant`` is its own variant, named by its run name.
    """
    groups: dict[str, dict[float | None, dict[str, Any]]] = {}
    for name, metrics in runs.items():
        variant = metrics.get("variant") or name
        lr = (metrics.get("train") or {}).get("lr")
        cell = groups.setdefault(variant, {}).setdefault(
            lr, {"runs": [], "seeds": [], "val": [], "scores": [], "model": metrics.get("model", {})}
        )
        cell["runs"].append(name)
        cell["seeds"].append((metrics.get("model") or {}).get("seed", len(cell["seeds"])))
        cell["val"].append(_validation(name, metrics))
        cell["scores"].append(_test_scores(name, metrics))
    return groups


def summary_rows(runs: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(rows, grid)``: one row per variant at its selected learning rate, and every (variant, lr) cell.

    Row: variant, method, sharing, routing, trainable %, lr, seeds, the validation average that chose the lr,
    each task's test score, NLVR2 consistency and the average (means over seeds), ``average_std``.
    """
    rows, grid = [], []
    for variant, by_lr in group_runs(runs).items():
        cells = []
        for lr, cell in by_lr.items():
            val = statistics.fmean(cell["val"])
            avg = statistics.fmean(s["average"] for s in cell["scores"])
            cells.append((val, lr, cell))
            grid.append({"variant": variant, "lr": lr, "seeds": len(cell["runs"]),
                         "val_average": round(val, 2), "average": round(avg, 2)})  # fmt: skip
        val, lr, cell = max(cells, key=lambda c: c[0])  # ties: the first lr listed
        model = cell["model"]
        row: dict[str, Any] = {
            "variant": variant,
            "method": model.get("method"),
            "sharing": model.get("sharing"),
            "routing": model.get("routing"),
            "trainable_percent": model.get("percent"),
            "lr": lr,
            "seeds": len(cell["runs"]),
            "val_average": round(val, 2),
        }
        for label in [label for _, label in COLUMNS] + ["NLVR2 consistency", "average"]:
            values = [s[label] for s in cell["scores"] if label in s]
            row[label] = round(statistics.fmean(values), 2) if values else None
            row[f"{label}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
        row["_by_seed"] = dict(zip(cell["seeds"], cell["scores"], strict=True))
        rows.append(row)
    _add_control_gains(rows)
    return rows, grid


def paired_gain(a: Mapping[Any, Mapping[str, float]], b: Mapping[Any, Mapping[str, float]], key: str,
                key_b: str | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Mean ± sample std over the seeds both have of ``a[seed][key] - b[seed][key_b or key]`` (None: no
    shared seed has both)."""
    diffs = [a[s][key] - b[s][key_b or key] for s in a if s in b and key in a[s] and (key_b or key) in b[s]]
    if not diffs:
        return None
    std = round(statistics.stdev(diffs), 2) if len(diffs) > 1 else None
    return {"mean": round(statistics.fmean(diffs), 2), "std": std, "n": len(diffs)}


def beats(gain: Mapping[str, Any] | None) -> bool | None:
    """A gain is real when its mean exceeds its seed spread (one seed: when it is positive)."""
    if gain is None:
        return None
    return gain["mean"] > (gain["std"] if gain["std"] is not None else 0.0)


def _add_control_gains(rows: list[dict[str, Any]]) -> None:
    """Per row and task: the gain over the ``blind`` row (paired by seed) and over the same runs scored with
    shuffled images, with spreads; ``not_above_blind``: the tasks where the first gain is not real."""
    by_seed = {id(r): r.pop("_by_seed") for r in rows}
    blind = next((r for r in rows if r["variant"] == BLIND), None)
    for row in rows:
        seeds = by_seed[id(row)]
        labels = [label for _, label in COLUMNS]
        row["vs_shuffled"] = {lb: paired_gain(seeds, seeds, lb, lb + SHUFFLED) for lb in labels}
        row["vs_blind"], row["not_above_blind"] = {}, None
        if blind is not None and row is not blind:
            row["vs_blind"] = {lb: paired_gain(seeds, by_seed[id(blind)], lb) for lb in labels}
            row["not_above_blind"] = [lb for lb, g in row["vs_blind"].items() if beats(g) is False]


def _cell(v: Any, key: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:g}" if key == "lr" else f"{v:.2f}"  # learning rates as 0.003, scores as 61.50
    return str(v)


def _gain(g: Mapping[str, Any] | None) -> str:
    if g is None:
        return "–"
    return f"{g['mean']:+.2f}" + ("" if g["std"] is None else f" ± {g['std']:.2f}")


def markdown(rows: list[dict[str, Any]], grid: list[dict[str, Any]] | None = None) -> str:
    """The rows as a Markdown table (scores in percent, CIDEr x 100; mean ± std over seeds), the gains over
    the controls (``blind`` and shuffled images, paired by seed; a row that does not beat blind by more
    than its spread on some task is flagged), then the learning-rate search when there was one."""
    keys = ["variant", "method", "sharing", "routing", "trainable_percent", "lr", "seeds"]
    keys += [label for _, label in COLUMNS] + ["NLVR2 consistency", "average"]
    headers = {"trainable_percent": "trainable %"}  # every other column is headed by its row key
    scored = {label for _, label in COLUMNS} | {"NLVR2 consistency", "average"}

    def cell(r: dict[str, Any], k: str) -> str:
        std = r.get(f"{k}_std") if k in scored else None
        return _cell(r.get(k), k) + ("" if std is None else f" ± {std:.2f}")

    lines = ["| " + " | ".join(headers.get(k, k) for k in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r, k) for k in keys) + " |" for r in rows]
    if any(r.get("vs_blind") or any(r.get("vs_shuffled", {}).values()) for r in rows):
        labels = [label for _, label in COLUMNS]
        lines += [
            "",
            "Gain over the controls, per task (mean ± std of the per-seed differences): over `blind` "
            "(trained without the image) and over the same runs scored with every image swapped for "
            "another (shuffled)",
            "",
            "| variant | "
            + " | ".join(f"{lb} − blind | {lb} − shuffled" for lb in labels)
            + " | beats blind |",
            "|---|" + "---|" * (2 * len(labels) + 1),
        ]
        for r in rows:
            gains = [f"{_gain(r['vs_blind'].get(lb))} | {_gain(r['vs_shuffled'].get(lb))}" for lb in labels]
            flag = r.get("not_above_blind")
            verdict = "(control)" if flag is None else "**no: " + ", ".join(flag) + "**" if flag else "yes"
            lines.append(f"| {r['variant']} | " + " | ".join(gains) + f" | {verdict} |")
    lrs = sorted({g["lr"] for g in grid or () if g["lr"] is not None})
    searched = len({(g["variant"], g["lr"]) for g in grid or ()}) > len({g["variant"] for g in grid or ()})
    if searched:  # some variant trained at more than one lr
        val = {(g["variant"], g["lr"]): g["val_average"] for g in grid}
        lines += ["", "Learning-rate search: validation average (the chosen lr's test scores are above)", ""]
        lines += [
            "| variant | " + " | ".join(f"lr {_cell(lr, 'lr')}" for lr in lrs) + " |",
            "|---|" + "---|" * len(lrs),
        ]
        for r in rows:
            cells = [_cell(val.get((r["variant"], lr))) for lr in lrs]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_names(runs_dir: Path) -> list[str]:
    """Every run directory under ``runs_dir`` that holds a ``metrics.json``, by name."""
    found = sorted(p.parent.name for p in Path(runs_dir).glob("*/metrics.json"))
    if not found:
        raise DataError(f"{runs_dir}: no <run>/metrics.json found")
    return found


def write_summary(
    runs_dir: Path,
    names: list[str] | None,
    out_md: Path,
    out_json: Path,
    plot: Path | None,
    plot_data: Path | None = None,
) -> tuple[list[dict], list[dict]]:
    """Read ``<runs_dir>/<name>/metrics.json`` of every run; write the table, its JSON, the PNG plot and
    ``plot_data`` (``[{variant, average}]``, a ``dvc plots`` bar chart). Returns ``summary_rows``' pair.

    ``names`` None (or empty): every run under ``runs_dir`` (``run_names``), so a pipeline whose variants are
    a params table need not repeat their names. Rows come in the order their variant's first run is named.
    """
    names = list(names) if names else run_names(runs_dir)
    runs = {n: read_json(Path(runs_dir) / n / "metrics.json", "train metrics") for n in names}
    rows, grid = summary_rows(runs)
    write_text(out_md, markdown(rows, grid))
    write_json(out_json, {"columns": [label for _, label in COLUMNS], "rows": rows, "lr_search": grid})
    if plot is not None:
        _plot(rows, plot)
    if plot_data is not None:
        write_json(plot_data, [{"variant": r["variant"], "average": r["average"]} for r in rows])
    return rows, grid


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlpeft.io import atomic_path

    labels = [label for _, label in COLUMNS] + ["average"]
    fig, ax = plt.subplots(figsize=(7 + 0.4 * max(len(rows) - 2, 0), 3.5))
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(labels))]
        ax.bar(xs, [row.get(k) or 0.0 for k in labels], width, label=f"{row['variant']} ({row['routing']})")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
    ax.set_ylabel("test score (%; CIDEr x 100)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
