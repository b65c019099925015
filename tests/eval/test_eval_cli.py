"""`vlpeft evaluate vqa|caption` as a user runs it: real subprocesses, exit codes, files written or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vqa_cases import make_vqa
from vqa_official_api import run_official
from vqa_official_legacy_ref import OfficialVQAEvalLegacy
from vqa_official_master_ref import OfficialVQAEvalMaster

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vlpeft", "evaluate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def vqa_files(tmp_path):
    qfile, afile, results = make_vqa(300, seed=11)
    paths = {}
    for name, data in (("q", qfile), ("a", afile), ("p", results)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    return paths, (qfile, afile, results)


def _vqa_args(paths, out):
    return ("vqa", "--questions", str(paths["q"]), "--annotations", str(paths["a"]),
            "--predictions", str(paths["p"]), "--out", str(out))  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "revision", "reference"),
    [([], "master", OfficialVQAEvalMaster), (["--revision", "legacy"], "legacy", OfficialVQAEvalLegacy)],
)
def test_vqa_cli_writes_official_metrics(vqa_files, tmp_path, flag, revision, reference):
    paths, (qfile, afile, results) = vqa_files
    out, per_q = tmp_path / "out" / "metrics.json", tmp_path / "per_question.json"
    proc = _run(*_vqa_args(paths, out), "--per-question", str(per_q), *flag)
    assert proc.returncode == 0, proc.stderr
    official = run_official(reference, qfile, afile, results)
    assert json.loads(out.read_text()) == {**official.accuracy, "revision": revision}
    per_question = {str(k): v for k, v in official.evalQA.items()}
    assert json.loads(per_q.read_text()) == {"revision": revision, "evalQA": per_question}
    assert json.loads(proc.stdout)["overall"] == official.accuracy["overall"]
    assert json.loads(proc.stdout)["revision"] == revision


def test_vqa_cli_unknown_revision_is_one_line(vqa_files, tmp_path):
    paths, _ = vqa_files
    out = tmp_path / "out" / "metrics.json"
    out.parent.mkdir()
    proc = _run(*_vqa_args(paths, out), "--revision", "newest")
    _assert_clean_failure(proc, out, "--revision", "'newest' is not one of 'master', 'legacy'")


def _assert_clean_failure(proc, out: Path, *needles: str):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.glob(f".{out.name}*")], "temp file left behind"


def _corrupt(kind: str, results: list, path: Path) -> str:
    """Write a broken predictions file; return the words the error line must contain."""
    if kind == "missing-file":
        path.unlink()
        return "does not exist"  # checked while the command line is parsed
    if kind == "truncated":
        path.write_text(json.dumps(results)[:-40])
        return "not valid JSON"
    if kind == "not-a-list":
        path.write_text(json.dumps({"results": results}))
        return "expected a list"
    if kind == "null-answer":
        results[5]["answer"] = None
        path.write_text(json.dumps(results))
        return "answer is null"
    if kind == "missing-ids":
        path.write_text(json.dumps(results[:-3]))
        return "no prediction for 3 of 300"
    if kind == "unknown-id":
        results.append({"question_id": 999_999_999, "answer": "yes"})
        path.write_text(json.dumps(results))
        return "999999999"
    if kind == "duplicate-id":
        results.append(dict(results[0]))
        path.write_text(json.dumps(results))
        return "appears more than once"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["missing-file", "truncated", "not-a-list", "null-answer", "missing-ids", "unknown-id", "duplicate-id"],
)
def test_vqa_cli_bad_predictions_exit_2_one_line(vqa_files, tmp_path, kind):
    paths, (_, _, results) = vqa_files
    needle = _corrupt(kind, [dict(r) for r in results], paths["p"])
    out = tmp_path / "metrics.json"
    _assert_clean_failure(_run(*_vqa_args(paths, out)), out, str(paths["p"]), needle)


def test_vqa_cli_bad_ground_truth_files(vqa_files, tmp_path):
    paths, _ = vqa_files
    out = tmp_path / "metrics.json"
    paths["a"].write_text(json.dumps({"annotations": "nope"}))
    _assert_clean_failure(_run(*_vqa_args(paths, out)), out, str(paths["a"]), "'annotations' list")
    paths["a"] = tmp_path / "absent.json"
    _assert_clean_failure(_run(*_vqa_args(paths, out)), out, str(paths["a"]), "does not exist")


def test_caption_cli_bad_predictions_exit_2_before_any_java(tmp_path):
    anns = [{"image_id": i, "id": i, "caption": c} for i, c in ((1, "a cat"), (2, "a dog"))]
    gt = {"images": [{"id": 1}, {"id": 2}], "annotations": anns}
    gt_path, pred_path, out = tmp_path / "gt.json", tmp_path / "p.json", tmp_path / "m.json"
    gt_path.write_text(json.dumps(gt))
    args = ("caption", "--annotations", str(gt_path), "--predictions", str(pred_path), "--out", str(out))
    pred_path.write_text(json.dumps([{"image_id": 1, "caption": "a cat"}, {"image_id": 3, "caption": "x"}]))
    _assert_clean_failure(_run(*args), out, str(pred_path), "not in the ground truth")
    pred_path.write_text('[{"image_id": 1, "caption": "a c')
    _assert_clean_failure(_run(*args), out, str(pred_path), "not valid JSON")
    pred_path.write_text(json.dumps([{"image_id": 1, "caption": "a cat"}]))
    _assert_clean_failure(_run(*args), out, str(pred_path), "no caption for 1 of 2 images")


def test_caption_cli_without_java_is_one_line(tmp_path):
    anns = [{"image_id": 1, "id": 1, "caption": "a cat"}]
    gt_path, pred_path, out = tmp_path / "gt.json", tmp_path / "p.json", tmp_path / "m.json"
    gt_path.write_text(json.dumps({"images": [{"id": 1}], "annotations": anns}))
    pred_path.write_text(json.dumps([{"image_id": 1, "caption": "a cat"}]))
    args = ["caption", "--annotations", str(gt_path), "--predictions", str(pred_path), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "vlpeft", "evaluate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(tmp_path)},  # a PATH without java
    )
    _assert_clean_failure(proc, out, "java not found")
