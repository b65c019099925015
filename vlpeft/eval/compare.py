"""The final comparison: each task's variants (routed, plain LoRA, blind) over seeds, with their gains.

Each task is trained as the variants of ``params.yaml`` (``best`` = the sweep's best routing/rank,
``norouting`` = the same with routing ``none``, ``blind`` = no image at all; see ``vlpeft.variants``), once
per seed. A result that uses the image shows up as a gap to the blind floor and to the image-shuffled control
(``<variant>/shuffled`` rows: the same runs scored with every test image swapped for another,
``vlpeft.train.controls``); routing as a gap to ``norouting``. Every row shows its gain over blind (paired by
seed, ± std) and is flagged when that gain is not larger than its spread.

Pure functions turn the runs' flat headline metrics into mean ± std per variant and paired gains
(``summarize``) and a Markdown table (``to_markdown``); ``read_runs`` reads the DVC layout
(``metrics/<task>-<variant>-<seed>.json``) and ``write_plot`` draws the summary figure. The ``report`` CLI and
the Kubeflow summary component both call these.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlpeft.variants import FinalRun, parse_run_name

VQA_COLUMNS: tuple[str, ...] = ("overall", "yes/no", "number", "other")
CAPTION_COLUMNS: tuple[str, ...] = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
HEADLINE_KEY = {"vqa": "overall", "caption": "CIDEr"}
BLIND = "blind"  # the control variant trained without the image
SHUFFLED = "/shuffled"  # row suffix: a variant's runs scored with every test image swapped (train.controls)
# The gains the comparison exists for: (name, variant, baseline variant).
GAINS: tuple[tuple[str, str, str], ...] = (
    ("image_gain", "best", BLIND),
    ("shuffle_gain", "best", "best" + SHUFFLED),
    ("routing_gain", "best", "norouting"),
)
# What each variant trained, from the train stage's metrics.json ``model`` block.
SETTING_COLUMNS: tuple[str, ...] = ("method", "routing", "rank", "trainable")

Headlines = Mapping[str, float | None]


def headline_metrics(task: str, metrics: Mapping[str, Any]) -> dict[str, float | str | None]:
    """The flat figures of one run's official test metrics (what DVC declares as its metrics file).

    VQA: overall and per answer type (percent). Captions: BLEU-4, METEOR, ROUGE-L, CIDEr, SPICE x100 as the
    papers print them (SPICE ``None`` when it did not run). Numbers only: the official ``vqaEval.py``
    revision that produced a VQA run's figures is named in that run's ``metrics.json`` (``test.revision``),
    in the summary title and in MLflow; as a text column it would repeat one word on every VQA row and cost
    12 of the 120 columns ``dvc metrics show`` has to fit in.
    """
    if task == "vqa":
        per_type = metrics.get("perAnswerType", {})
        out: dict[str, float | str | None] = {"overall": float(metrics["overall"])}
        for col in VQA_COLUMNS[1:]:
            out[col] = float(per_type[col]) if col in per_type else None
        return out
    return {
        col: (round(100.0 * float(metrics[col]), 2) if metrics.get(col) is not None else None)
        for col in CAPTION_COLUMNS
    }


def columns(task: str) -> tuple[str, ...]:
    """The score columns of a task's headline metrics."""
    return VQA_COLUMNS if task == "vqa" else CAPTION_COLUMNS


def mean_std(values: list[float]) -> dict[str, float | int | None]:
    """``{"mean", "std", "n"}``; std is the sample std (``None`` for one value)."""
    return {
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else None,
        "n": len(values),
    }


def summarize(
    task: str,
    runs: Mapping[str, Mapping[int, Headlines]],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Mean ± std per variant and column over seeds, and each gain with its spread.

    ``runs`` maps variant -> seed -> headline metrics of that run; ``settings`` optionally maps a variant to
    what it trained (method, routing, rank, trainable parameters). A gain is paired by seed: the mean and std
    of ``score(variant, s) - score(baseline, s)`` over the seeds both variants have.
    """
    settings = settings or {}
    key = HEADLINE_KEY[task]
    rows: dict[str, Any] = {}
    for variant, by_seed in runs.items():
        stats: dict[str, Any] = {}
        for col in columns(task):
            values = [float(m[col]) for m in by_seed.values() if m.get(col) is not None]
            stats[col] = mean_std(values) if values else None
        rows[variant] = {**dict(settings.get(variant, {})), "seeds": sorted(by_seed), "scores": stats}
    out: dict[str, Any] = {"task": task, "metric": key, "rows": rows}
    revisions = sorted({str(m["revision"]) for r in runs.values() for m in r.values() if m.get("revision")})
    if revisions:  # which official vqaEval.py revision produced the numbers (several: they do not compare)
        out["revision"] = ", ".join(revisions)
    for name, variant, baseline in GAINS:
        gain = paired_gain(runs, variant, baseline, key)
        if gain is not None:
            out[name] = {**gain, "of": f"{variant} - {baseline}"}
    if BLIND in runs:  # every other row against the blind floor, flagged when the gain is within its spread
        for variant, row in rows.items():
            if variant != BLIND:
                row["vs_blind"] = paired_gain(runs, variant, BLIND, key)
                row["beats_blind"] = beats(row["vs_blind"])
    return out


def paired_gain(
    runs: Mapping[str, Mapping[int, Headlines]], variant: str, baseline: str, key: str
) -> dict[str, float | int | None] | None:
    """Mean ± std over the seeds both have of ``score(variant, s) - score(baseline, s)`` (None: none)."""
    if variant not in runs or baseline not in runs:
        return None
    shared = sorted(set(runs[variant]) & set(runs[baseline]))
    diffs = [
        float(runs[variant][s][key]) - float(runs[baseline][s][key])  # type: ignore[arg-type]
        for s in shared
        if runs[variant][s].get(key) is not None and runs[baseline][s].get(key) is not None
    ]
    return mean_std(diffs) if diffs else None


def beats(gain: Mapping[str, Any] | None) -> bool | None:
    """A gain is real when its mean exceeds its seed spread (one seed: when it is positive)."""
    if gain is None:
        return None
    return bool(gain["mean"] > (gain["std"] if gain["std"] is not None else 0.0))


def _cell(stat: Mapping[str, Any] | None) -> str:
    if stat is None:
        return "n/a"
    if stat["std"] is None:
        return f"{stat['mean']:.2f}"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _signed(stat: Mapping[str, Any] | None) -> str:
    """A gain as ``+1.23 ± 0.45`` (``–`` when there is none)."""
    if stat is None:
        return "–"
    return f"{stat['mean']:+.2f}" + ("" if stat["std"] is None else f" ± {stat['std']:.2f}")


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def to_markdown(summary: Mapping[str, Any]) -> str:
    """A Markdown table of one task's summary (mean ± std over seeds) with its gains underneath."""
    task = summary["task"]
    rows: Mapping[str, Mapping[str, Any]] = summary["rows"]
    score_cols = list(columns(task))
    extra = [c for c in SETTING_COLUMNS if any(c in r for r in rows.values())]
    title = "VQA (soft accuracy %, official evaluation)" if task == "vqa" else "Captioning (x100)"
    if summary.get("revision"):
        title = title.replace("official evaluation", f"official evaluation, vqaEval.py {summary['revision']}")
    n = max((len(r["seeds"]) for r in rows.values()), default=0)
    spread = f", mean ± std over {n} seeds" if n > 1 else ", one seed"
    controls = any("beats_blind" in r for r in rows.values())
    versus = [f"{summary['metric']} − blind", "beats blind"] if controls else []
    lines = [
        f"### {title}{spread}",
        "",
        "| variant | " + " | ".join([*extra, "seeds", *score_cols, *versus]) + " |",
        "|---" * (len(extra) + len(score_cols) + len(versus) + 2) + "|",
    ]
    for name, r in rows.items():
        cells = [_fmt(r.get(c)) for c in extra] + [",".join(map(str, r["seeds"]))]
        cells += [_cell(r["scores"].get(c)) for c in score_cols]
        if controls:
            verdict = {True: "yes", False: "**no**", None: "–"}[r.get("beats_blind")]
            cells += [_signed(r.get("vs_blind")), verdict if name != BLIND else "(control)"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, variant, baseline in GAINS:
        if name in summary:
            g = summary[name]
            spread = (
                f" ± {g['std']:.2f} (std of {g['n']} paired seeds)" if g["std"] is not None else " (one seed)"
            )
            label = name.replace("_", " ")
            lines.append(
                f"- {label} ({variant} - {baseline}, {summary['metric']}): **{g['mean']:+.2f}**{spread}"
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ I/O


def read_runs(
    metrics_dir: Path, runs_dir: Path | None = None
) -> tuple[dict[str, dict[str, dict[int, Headlines]]], dict[str, dict[str, dict[str, Any]]]]:
    """The DVC layout: ``metrics_dir/<task>-<variant>-<seed>.json`` headline files (others are ignored) and,
    optionally, ``runs_dir/<same name>/metrics.json`` for what each variant trained.

    Returns ``(runs, settings)``: task -> variant -> seed -> headline metrics; task -> variant -> settings.
    """
    from vlpeft.errors import ConfigError
    from vlpeft.io import read_json

    runs: dict[str, dict[str, dict[int, Headlines]]] = {}
    settings: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(Path(metrics_dir).glob("*.json")):
        try:
            run: FinalRun = parse_run_name(path.stem)
        except ConfigError:
            continue  # pretrain.json and other files that are not final runs
        headline = dict(read_json(path, "metrics file"))
        runs.setdefault(run.task, {}).setdefault(run.variant, {})[run.seed] = headline
        info_path = Path(runs_dir) / run.name / "metrics.json" if runs_dir is not None else None
        if info_path is None or not info_path.is_file():
            continue
        info = read_json(info_path, "training metrics")
        test = info.get("test")
        if isinstance(test, dict) and test.get("revision"):  # the vqaEval.py revision of these figures
            headline["revision"] = str(test["revision"])
        model = info.get("model", {})
        chosen = {k: model[k] for k in SETTING_COLUMNS if model.get(k) is not None}
        if run.variant not in settings.get(run.task, {}):
            settings.setdefault(run.task, {})[run.variant] = chosen
        shuffled = info.get("test_shuffled")
        if isinstance(shuffled, dict):  # the same run scored with shuffled images: a control row
            control = run.variant + SHUFFLED
            runs[run.task].setdefault(control, {})[run.seed] = headline_metrics(run.task, shuffled)
            settings[run.task].setdefault(control, chosen)
    return runs, settings


def write_plot(summaries: Mapping[str, Mapping[str, Any]], runs: Mapping[str, Any], path: Path) -> None:
    """One panel per task: the headline metric per variant as a bar (mean), its std as an error bar and
    every seed as a dot, so the spread is visible next to the gains."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlpeft.io import atomic_path

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.5 * len(summaries), 3.4), squeeze=False)
    for ax, (task, summary) in zip(axes[0], summaries.items(), strict=True):
        key = summary["metric"]
        names = list(summary["rows"])
        stats = [summary["rows"][n]["scores"].get(key) or {"mean": 0.0, "std": None} for n in names]
        means = [s["mean"] for s in stats]
        errs = [s["std"] or 0.0 for s in stats]
        bars = ax.bar(
            names, means, yerr=errs, capsize=4, color=["#2b6cb0", "#718096", "#cbd5e0"][: len(names)]
        )
        ax.bar_label(bars, labels=[_cell(s) for s in stats], fontsize=8, padding=2)
        for i, name in enumerate(names):
            points = [float(m[key]) for m in runs[task][name].values() if m.get(key) is not None]
            ax.scatter([i] * len(points), points, color="black", s=10, zorder=3)
        gains = ", ".join(f"{g.split('_')[0]} {summary[g]['mean']:+.1f}" for g, _, _ in GAINS if g in summary)
        ax.set_title(f"{task}: {'accuracy %' if task == 'vqa' else 'CIDEr x100'}\n{gains}", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
