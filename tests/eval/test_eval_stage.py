"""The library's evaluate stage (what DVC and Kubeflow call) reads ``evaluate.vqa_revision`` from params."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vqa_cases import make_vqa
from vqa_official_api import run_official
from vqa_official_legacy_ref import OfficialVQAEvalLegacy
from vqa_official_master_ref import OfficialVQAEvalMaster

from vlpeft import stages
from vlpeft.config import load_params
from vlpeft.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("revision", "reference"), [("master", OfficialVQAEvalMaster), ("legacy", OfficialVQAEvalLegacy)]
)
def test_evaluate_stage_follows_params_revision(tmp_path, revision, reference):
    qfile, afile, results = make_vqa(400, seed=21)
    paths = {}
    for name, data in (("q", qfile), ("a", afile), ("p", results)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    params = load_params([REPO / "params.yaml"], [f"evaluate.vqa_revision={revision}"])
    out = tmp_path / "metrics.json"
    summary = stages.evaluate(
        params, "vqa", predictions=paths["p"], out=out, questions=paths["q"], annotations=paths["a"]
    )
    official = run_official(reference, qfile, afile, results)
    other = run_official(
        ({OfficialVQAEvalMaster, OfficialVQAEvalLegacy} - {reference}).pop(), qfile, afile, results
    )
    assert other.accuracy["overall"] != official.accuracy["overall"]  # so the revision read is visible
    assert json.loads(out.read_text()) == {**official.accuracy, "revision": revision}
    assert summary["overall"] == official.accuracy["overall"] and summary["revision"] == revision


def test_unknown_revision_in_params_is_a_config_error():
    with pytest.raises(ConfigError, match="vqa_revision"):
        load_params([REPO / "params.yaml"], ["evaluate.vqa_revision=newest"])
