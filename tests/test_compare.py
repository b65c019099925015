"""The pipeline's side-by-side summary: gains computed from official metrics, table and CLI."""

from __future__ import annotations

import json

from vlpeft.cli import main
from vlpeft.eval.compare import summarize, to_markdown

VQA = {
    "best": {"overall": 66.5, "perAnswerType": {"yes/no": 62.0, "number": 76.0, "other": 65.1}},
    "norouting": {"overall": 63.75, "perAnswerType": {"yes/no": 56.0, "number": 75.0, "other": 64.0}},
    "blind": {"overall": 43.0, "perAnswerType": {"yes/no": 59.0, "number": 49.0, "other": 31.0}},
}
CAPTION = {
    "best": {"Bleu_4": 0.45, "METEOR": 0.3, "ROUGE_L": 0.6, "CIDEr": 1.405, "SPICE": None},
    "blind": {"Bleu_4": 0.41, "METEOR": 0.25, "ROUGE_L": 0.5, "CIDEr": 0.701, "SPICE": None},
}


def test_vqa_gains_and_rows():
    s = summarize("vqa", VQA, {"best": {"routing": "mul", "rank": 8}})
    assert s["image_gain"] == 23.5 and s["routing_gain"] == 2.75
    assert s["rows"]["best"] == {
        "routing": "mul",
        "rank": 8,
        "overall": 66.5,
        "yes/no": 62.0,
        "number": 76.0,
        "other": 65.1,
    }
    md = to_markdown(s)
    assert "| best | mul | 8 | 66.50 | 62.00 | 76.00 | 65.10 |" in md
    assert "+23.50" in md and "+2.75" in md


def test_caption_scores_are_x100_and_missing_variant_has_no_gain():
    s = summarize("caption", CAPTION)
    assert s["rows"]["best"]["CIDEr"] == 140.5 and s["rows"]["best"]["SPICE"] is None
    assert s["image_gain"] == 70.4
    assert "routing_gain" not in s  # no norouting run
    assert "n/a" in to_markdown(s)


def test_report_cli(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for name, m in VQA.items():
        (metrics / f"vqa-{name}.json").write_text(json.dumps(m))
    out_json, out_md, plot = tmp_path / "s.json", tmp_path / "s.md", tmp_path / "s.png"
    args = ["report", "--metrics", str(metrics), "--out-json", str(out_json), "--out-md", str(out_md)]
    assert main([*args, "--plot", str(plot)]) == 0
    assert json.loads(out_json.read_text())["vqa"]["image_gain"] == 23.5
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "routing gain" in out_md.read_text()


def test_report_cli_no_metrics_is_exit_2(tmp_path, capsys):
    assert main(["report", "--metrics", str(tmp_path), "--out-json", str(tmp_path / "s.json")]) == 2
    assert "no <task>-<variant>.json" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
