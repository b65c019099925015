"""The final comparison: mean ± std over seeds, paired gains, headline files, the report CLI."""

from __future__ import annotations

import json

import pytest

from vlpeft.cli import main
from vlpeft.eval.compare import headline_metrics, summarize, to_markdown


def _vqa(overall, yes_no=60.0):
    return {"overall": overall, "yes/no": yes_no, "number": 70.0, "other": 65.0}


VQA = {  # variant -> seed -> headline metrics
    "best": {0: _vqa(66.0), 1: _vqa(68.0), 2: _vqa(67.0)},
    "norouting": {0: _vqa(64.0), 1: _vqa(67.0), 2: _vqa(64.0)},
    "blind": {0: _vqa(43.0), 1: _vqa(44.0), 2: _vqa(45.0)},
}


def test_headline_metrics_are_flat():
    official = {"overall": 66.5, "perAnswerType": {"yes/no": 62.0, "number": 76.0, "other": 65.1},
                "perQuestionType": {"how many": 70.0}}  # fmt: skip
    assert headline_metrics("vqa", official) == {
        "overall": 66.5,
        "yes/no": 62.0,
        "number": 76.0,
        "other": 65.1,
    }
    assert "revision" not in headline_metrics("vqa", {**official, "revision": "master"})  # numbers only
    caption = {"Bleu_1": 0.7, "Bleu_4": 0.45, "METEOR": 0.3, "ROUGE_L": 0.6, "CIDEr": 1.40512, "SPICE": None,
               "SPICE_note": "SPICE unavailable: /some/machine/path"}  # fmt: skip
    assert headline_metrics("caption", caption) == {
        "Bleu_4": 45.0, "METEOR": 30.0, "ROUGE_L": 60.0, "CIDEr": 140.51, "SPICE": None,
    }  # fmt: skip


def test_mean_std_and_paired_gains():
    s = summarize("vqa", VQA, {"best": {"routing": "mul", "rank": 8}})
    best = s["rows"]["best"]
    assert best["seeds"] == [0, 1, 2] and best["routing"] == "mul"
    assert best["scores"]["overall"] == {"mean": 67.0, "std": 1.0, "n": 3}
    # image gain per seed 23, 24, 22; routing gain per seed 2, 1, 3 (paired, not a difference of means' stds)
    assert (s["image_gain"]["mean"], s["image_gain"]["std"]) == (23.0, 1.0)
    assert (s["routing_gain"]["mean"], s["routing_gain"]["std"]) == (2.0, 1.0)
    md = to_markdown(s)
    assert "mean ± std over 3 seeds" in md
    assert "| best | mul | 8 | 0,1,2 | 67.00 ± 1.00 |" in md
    assert "**+2.00** ± 1.00 (std of 3 paired seeds)" in md


def test_one_seed_and_missing_variant():
    caption = {"best": {0: {"CIDEr": 140.5, "SPICE": None}}, "blind": {0: {"CIDEr": 70.1, "SPICE": None}}}
    s = summarize("caption", caption)
    assert s["image_gain"] == {"mean": 70.4, "std": None, "n": 1, "of": "best - blind"}
    assert "routing_gain" not in s and s["rows"]["best"]["scores"]["SPICE"] is None
    md = to_markdown(s)
    assert "one seed" in md and "| 140.50 | n/a |" in md and "**+70.40** (one seed)" in md


def test_gains_pair_only_shared_seeds():
    runs = {"best": {0: _vqa(60.0), 1: _vqa(70.0)}, "blind": {1: _vqa(50.0)}}
    assert summarize("vqa", runs)["image_gain"]["mean"] == pytest.approx(20.0)


def test_report_cli(tmp_path):
    metrics, runs = tmp_path / "metrics", tmp_path / "train"
    metrics.mkdir()
    (metrics / "pretrain.json").write_text(json.dumps({"vit_bitwise_acc": 0.95}))  # not a final run: ignored
    for variant, by_seed in VQA.items():
        for seed, m in by_seed.items():
            (metrics / f"vqa-{variant}-{seed}.json").write_text(json.dumps(m))
    (runs / "vqa-best-0").mkdir(parents=True)
    (runs / "vqa-best-0" / "metrics.json").write_text(json.dumps({"model": {"routing": "mul", "rank": 8}}))
    out_json, out_md, plot = tmp_path / "s.json", tmp_path / "s.md", tmp_path / "s.png"
    args = ["report", "--metrics", str(metrics), "--runs", str(runs), "--out-json", str(out_json)]
    assert main([*args, "--out-md", str(out_md), "--plot", str(plot)]) == 0
    summary = json.loads(out_json.read_text())
    assert summary["vqa"]["routing_gain"]["mean"] == 2.0 and summary["vqa"]["rows"]["best"]["rank"] == 8
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "routing gain" in out_md.read_text()


def test_report_cli_no_metrics_is_exit_2(tmp_path, capsys):
    assert main(["report", "--metrics", str(tmp_path), "--out-json", str(tmp_path / "s.json")]) == 2
    assert "no <task>-<variant>-<seed>.json" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_summary_names_the_vqa_revision():
    runs = {v: {s: {**m, "revision": "master"} for s, m in by_seed.items()} for v, by_seed in VQA.items()}
    summary = summarize("vqa", runs)
    assert summary["revision"] == "master"
    assert "official evaluation, vqaEval.py master" in to_markdown(summary)
    assert "revision" not in summarize("vqa", VQA)  # older headline files without it: nothing claimed


def test_every_row_against_blind_and_the_shuffled_control_rows(tmp_path):
    """Each run's image-shuffled test (metrics.json ``test_shuffled``) becomes a ``<variant>/shuffled`` row;
    every non-blind row shows its paired gain over blind and is flagged when it is within the spread."""
    from vlpeft.eval.compare import read_runs

    metrics, train = tmp_path / "metrics", tmp_path / "train"
    metrics.mkdir()
    shuffled = {"best": (44.0, 46.0, 44.0), "norouting": (43.0, 44.0, 46.0)}  # about the blind floor
    for variant, by_seed in VQA.items():
        for seed, m in by_seed.items():
            name = f"vqa-{variant}-{seed}"
            (metrics / f"{name}.json").write_text(json.dumps(m))
            info = {"model": {"routing": "mul" if variant == "best" else "none"}}
            if variant in shuffled:
                info["test_shuffled"] = {"overall": shuffled[variant][seed], "perAnswerType": {}}
            (train / name).mkdir(parents=True)
            (train / name / "metrics.json").write_text(json.dumps(info))
    runs, settings = read_runs(metrics, train)
    none = {"yes/no": None, "number": None, "other": None}
    assert runs["vqa"]["best/shuffled"] == {s: {"overall": v, **none} for s, v in enumerate(shuffled["best"])}
    assert settings["vqa"]["best/shuffled"] == {"routing": "mul"}
    s = summarize("vqa", runs["vqa"], settings["vqa"])
    rows = s["rows"]
    # 22, 22, 23 per seed
    assert s["shuffle_gain"] == {"mean": 22.33, "std": 0.58, "n": 3, "of": "best - best/shuffled"}
    assert rows["best"]["vs_blind"] == {"mean": 23.0, "std": 1.0, "n": 3} and rows["best"]["beats_blind"]
    assert rows["norouting/shuffled"]["vs_blind"]["mean"] == pytest.approx(0.33, abs=0.01)
    assert rows["norouting/shuffled"]["beats_blind"] is False and "vs_blind" not in rows["blind"]
    md = to_markdown(s)
    assert "| overall − blind | beats blind |" in md
    assert "| best | mul | 0,1,2 | 67.00 ± 1.00 | 60.00 ± 0.00 |" in md and "| +23.00 ± 1.00 | yes |" in md
    assert (
        "| norouting/shuffled | none | 0,1,2 | 44.33 ± 1.53 | n/a | n/a | n/a | +0.33 ± 0.58 | **no** |" in md
    )
    assert "| blind | " in md and "| – | (control) |" in md
