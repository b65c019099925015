"""Render a ``Review`` as a self-contained HTML page, a Markdown summary and a JSON record.

The HTML embeds everything (plots and sample images as base64 PNG): it can be mailed or attached to a PR.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from vlpeft.io import write_json, write_text
from vlpeft.tasks import TASKS
from vlpeft.tracking.review import Review, Sample, Side

ANSWER_TYPES = ("overall", "perAnswerType/")
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
MAX_CURVES = 12
TEXT_LABEL = {"nlvr": "statement"}  # what a sample's text is (default: a question)


def _by_kind(keys: set[str], prefix: str = "") -> list[tuple[str, list[str]]]:
    """``keys`` that start with ``prefix`` grouped by what follows it: per answer type, caption metrics, per
    question type, other; titles name the prefix (a multi-task model's task)."""
    name = {k[len(prefix) :]: k for k in keys if k.startswith(prefix)}
    answer = sorted((n for n in name if n.startswith(ANSWER_TYPES)), key=lambda n: (n != "overall", n))
    caption = [n for n in CAPTION_METRICS if n in name]
    qtype = sorted(n for n in name if n.startswith("perQuestionType/"))
    other = sorted(set(name) - set(answer) - set(caption) - set(qtype))
    label = f"{prefix[:-1]}: " if prefix else ""
    groups = [
        ("VQA accuracy per answer type", answer),
        ("Caption metrics", caption),
        ("VQA accuracy per question type", qtype),
        ("Other metrics", other),
    ]
    return [(label + title, [name[n] for n in ns]) for title, ns in groups if ns]


def metric_groups(keys: set[str], review: Review | None = None) -> list[tuple[str, list[str]]]:
    """Metric keys grouped for display: per answer type, caption metrics, per question type, other.

    A multi-task model's review (its task's ``per_task_metric``) first gets each task's score beside the
    headline average, then each task's own metrics (``<task>.*``) grouped the same way, then the rest.
    """
    spec = TASKS.get(review.task) if review is not None else None
    if spec is None or spec.per_task_metric is None:
        return _by_kind(keys)
    scores = [k for k in (f"{t}/{spec.per_task_metric}" for t in review.tasks) if k in keys]
    scores += [spec.test_metric] if spec.test_metric in keys else []
    groups = [("Per task and average (test)", scores)] if scores else []
    rest = keys - set(scores)
    for task in review.tasks:
        mine = {k for k in rest if k.startswith(f"{task}/")}
        groups += _by_kind(mine, f"{task}/")
        rest -= mine
    return groups + _by_kind(rest)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def _delta(sides: list[Side], key: str) -> float | None:
    if len(sides) < 2 or key not in sides[0].metrics or key not in sides[1].metrics:
        return None
    return sides[1].metrics[key] - sides[0].metrics[key]


def model_rows(review: Review) -> list[tuple[str, list[str]]]:
    """Rows describing each side: version, aliases, method, routing, rank, trainable params, provenance."""
    fields = [
        ("version", lambda s: s.version.version),
        ("aliases", lambda s: ", ".join(s.aliases)),
        ("tasks", lambda s: s.version.tags.get("tasks", "?")),
        ("method", lambda s: s.version.tags.get("method", "?")),
        ("sharing", lambda s: s.version.tags.get("sharing", "?")),
        ("routing", lambda s: s.version.tags.get("routing", "?")),
        ("rank", lambda s: s.version.tags.get("rank", "?")),
        ("trainable parameters", lambda s: _params(s.version.tags)),
        ("data version (DVC)", lambda s: s.version.tags.get("data_version", "?")),
        ("code version (git)", lambda s: s.version.tags.get("code_version", "?")[:12]),
        ("run", lambda s: s.version.run_id or "?"),
    ]
    return [(name, [get(s) for s in review.sides]) for name, get in fields]


def _params(tags: dict[str, str]) -> str:
    trainable, percent = tags.get("params_trainable"), tags.get("params_percent")
    if trainable is None:
        return "?"
    return f"{int(float(trainable)):,}" + (f" ({float(percent):.3g} %)" if percent else "")


def _spread(side: Side, key: str) -> tuple[int, float | None]:
    """(seeds, std of ``key`` over them) from a version's tags (``registry.seed_tags``); (1, None) unknown."""
    tags = side.version.tags
    seeds = int(tags.get("seeds", "1") or 1)
    std = tags.get(f"metric_std.{key}")
    return seeds, (float(std) if std is not None and seeds >= 2 else None)


def verdict(review: Review) -> str:
    """One sentence on the primary metric (the task's ``test_metric``: VQA overall accuracy, CIDEr, the
    multi-task average) that never calls noise a win.

    The challenger is called better (or worse) only when both versions carry a seed spread (``seeds`` >= 2,
    ``metric_std.<key>`` tags: the standard deviation over the seeds of each version's variant) and the
    difference exceeds the combined spread ``sqrt(std_champion² + std_challenger²)``; within it, "no clear
    difference". Without a spread (single-seed runs) the sentence says the difference is not evidence.
    """
    spec = TASKS.get(review.task)
    key = spec.test_metric if spec is not None else ""
    if len(review.sides) < 2:
        return f"Only one version ({review.sides[0].label}) holds both aliases: nothing to compare yet."
    delta = _delta(review.sides, key)
    if delta is None:
        return f"Primary metric {key!r} is missing on one side; compare the tables."
    new, old = _fmt(review.sides[1].metrics[key]), _fmt(review.sides[0].metrics[key])
    (n_old, s_old), (n_new, s_new) = _spread(review.sides[0], key), _spread(review.sides[1], key)
    figures = f"{new} vs {old} ({delta:+.4g})"
    if s_old is None or s_new is None:
        higher = "higher" if delta > 0 else "lower" if delta < 0 else "the same"
        return (
            f"Challenger scores {higher} on {key}: {figures}, from single-seed runs: no seed spread is "
            "known, so this difference is not evidence either way (train the variant with several seeds)."
        )
    noise = (s_old**2 + s_new**2) ** 0.5
    seeds = f"seed spread ±{noise:.3g}, {n_new} vs {n_old} seeds"
    if abs(delta) <= noise:
        return f"No clear difference on {key}: {figures} is within the {seeds}."
    word = "better" if delta > 0 else "worse"
    return f"Challenger is {word} on {key}: {figures}, beyond the {seeds}."


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def curve_plots(review: Review) -> list[tuple[str, str]]:
    """``(metric, base64 PNG)`` per training curve, both sides overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A curve needs two points somewhere; a side with one point (a 1-epoch run) still shows as a marker.
    keys = sorted({k for s in review.sides for k, pts in s.curves.items() if len(pts) > 1})[:MAX_CURVES]
    plots = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
        for side in review.sides:
            if key in side.curves:
                steps, values = zip(*side.curves[key], strict=True)
                ax.plot(steps, values, marker="o", ms=3, label=side.label)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.append((key, _png(fig)))
    return plots


def image_b64(path: Path, size: int = 128) -> str:
    """A sample image as base64 PNG, upscaled (nearest) so tiny synthetic images are visible."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    scale = max(1, size // max(img.size))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metric_rows(review: Review, keys: list[str]) -> list[list[str]]:
    rows = []
    for key in keys:
        values = [_fmt(s.metrics.get(key)) for s in review.sides]
        delta = _delta(review.sides, key)
        rows.append(
            [key, *values]
            + ([] if len(review.sides) < 2 else [_fmt(delta) if delta is None else f"{delta:+.4g}"])
        )
    return rows


def _header(review: Review, first: str) -> list[str]:
    return [first, *(s.label for s in review.sides)] + (
        ["Δ (challenger − champion)"] if len(review.sides) > 1 else []
    )


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:8px;width:220px}
.card img{image-rendering:pixelated;width:128px}.card img.pair{width:100px}.plots img{margin:4px}"""


def sample_groups(review: Review) -> list[tuple[str, list[Sample]]]:
    """``(title, samples)`` per task, in the review's task order: one "Samples" group for a single task."""
    if len(review.tasks) <= 1:
        return [("Samples", review.samples)] if review.samples else []
    groups = [(f"Samples: {t}", [s for s in review.samples if s.task == t]) for t in review.tasks]
    return [(title, samples) for title, samples in groups if samples]


def _card(sample: Sample) -> str:
    label = TEXT_LABEL.get(sample.task, "Q")
    lines = [f"<b>{label}:</b> {html.escape(sample.question)}"] if sample.question is not None else []
    lines.append(f"<b>reference:</b> {html.escape(sample.reference)}")
    lines += [f"<b>{html.escape(k)}:</b> {html.escape(v)}" for k, v in sample.outputs.items()]
    paths = [p for p in (sample.image_path, sample.image2_path) if p is not None]
    css = " class='pair'" if len(paths) > 1 else ""
    imgs = "".join(f"<img{css} src='data:image/png;base64,{image_b64(p)}'>" for p in paths)
    return f"<div class='card'>{imgs}<br>{'<br>'.join(lines)}</div>"


def render_html(review: Review) -> str:
    """The self-contained HTML review page."""
    keys = set().union(*(s.metrics for s in review.sides))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Review {html.escape(review.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Model review: {html.escape(review.name)} ({html.escape(review.task)})</h1>",
        f"<p><b>{html.escape(verdict(review))}</b></p>",
        f"<p>Tracking store: <code>{html.escape(review.uri)}</code></p>",
        "<h2>Models</h2>",
        _table_html([""] + [s.label for s in review.sides], [[n, *v] for n, v in model_rows(review)]),
    ]
    for title, group in metric_groups(keys, review):
        parts += [
            f"<h2>{html.escape(title)}</h2>",
            _table_html(_header(review, "metric"), _metric_rows(review, group)),
        ]
    plots = curve_plots(review)
    if plots:
        parts.append("<h2>Training curves</h2><div class='plots'>")
        parts += [f"<img alt='{html.escape(k)}' src='data:image/png;base64,{p}'>" for k, p in plots]
        parts.append("</div>")
    for title, samples in sample_groups(review):
        parts.append(f"<h2>{html.escape(title)}</h2><div class='cards'>")
        parts += [_card(s) for s in samples]
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table_md(header: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(review: Review) -> str:
    """The Markdown summary: verdict, models, metric tables (not the per-question-type one), samples."""
    keys = set().union(*(s.metrics for s in review.sides))
    out = [
        f"# Model review: {review.name} ({review.task})",
        "",
        f"**{verdict(review)}**",
        "",
        "## Models",
        "",
    ]
    out += [_table_md([""] + [s.label for s in review.sides], [[n, *v] for n, v in model_rows(review)]), ""]
    for title, group in metric_groups(keys, review):
        if title.endswith("question type"):
            continue
        out += [f"## {title}", "", _table_md(_header(review, "metric"), _metric_rows(review, group)), ""]
    labels = [s.label for s in review.sides]
    for title, samples in sample_groups(review):
        # A text column when the task's samples have one (questions, NLVR2 statements; captions none).
        text = [TEXT_LABEL.get(samples[0].task, "question")] if samples[0].question is not None else []
        head = ["image", *text, "reference", *labels]
        rows = [
            [" + ".join(p.name for p in (s.image_path, s.image2_path) if p is not None)]
            + ([s.question or ""] if text else [])
            + [s.reference, *(s.outputs.get(label, "") for label in labels)]
            for s in samples
        ]
        out += [f"## {title}", "", _table_md(head, rows), ""]
    return "\n".join(out)


def review_record(review: Review) -> dict[str, Any]:
    """Machine-readable review (``review.json``)."""
    return {
        "name": review.name,
        "task": review.task,
        "tasks": review.tasks,
        "verdict": verdict(review),
        "sides": [
            {
                "label": s.label,
                "version": s.version.version,
                "aliases": s.aliases,
                "tags": s.version.tags,
                "metrics": s.metrics,
            }
            for s in review.sides
        ],
        "samples": [
            {
                "task": s.task,
                "image": str(s.image_path),
                **({"image2": str(s.image2_path)} if s.image2_path is not None else {}),
                "question": s.question,
                "reference": s.reference,
                "outputs": s.outputs,
            }
            for s in review.samples
        ],
    }


def write_review(review: Review, out_dir: str | Path) -> dict[str, Path]:
    """Write ``review.html``, ``review.md`` and ``review.json`` (atomically) into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {
        "html": out_dir / "review.html",
        "markdown": out_dir / "review.md",
        "json": out_dir / "review.json",
    }
    write_text(paths["html"], render_html(review))
    write_text(paths["markdown"], render_markdown(review) + "\n")
    write_json(paths["json"], review_record(review))
    return paths
