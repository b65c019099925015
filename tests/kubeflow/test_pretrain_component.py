"""The ``pretrain`` component under ``kfp.local`` (data -> pretrain, SubprocessRunner) writes the same health
figure as ``vlpeft pretrain --headline`` (DVC's metrics/pretrain.json) and shows it in its Metrics artifact.

Both call ``vlpeft.stages.pretrain``; the health figure is computed there, not in the CLI, so the KFP UI and
``dvc metrics show`` agree. Same params, seed, CPU and one thread: the same number, not just the same key.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from vlpeft.config import params_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.filterwarnings("ignore")]

TINY = {
    "world": {"image_size": 32, "n_train": 24, "n_val": 8, "n_test": 8, "corpus_scenes": 30},
    "pretrain": {
        "width": 32, "layers": 1, "heads": 2, "ffn": 64,
        "vit": {"image_size": 32, "patch_size": 8, "epochs": 1, "batch_size": 8},
        "text": {"steps": 4, "batch_size": 16},
    },
    "tracking": {"enabled": False},
}  # fmt: skip


def test_pretrain_component_logs_the_dvc_health_figure(tmp_path, monkeypatch):
    from kfp import dsl, local

    import components
    from pipelines.compile import params_yaml_text
    from vlpeft.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(TINY))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli = tmp_path / "cli"
        assert main(["data", "synth", "--out", str(cli / "data"), "--params", str(params_file)]) == 0
        headline = cli / "metrics" / "pretrain.json"
        assert main(["pretrain", "--data", str(cli / "data"), "--out", str(cli / "models"),
                     "--headline", str(headline), "--params", str(params_file)]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    reference = json.loads(headline.read_text())
    assert set(reference) == {"ViT"}

    params = params_from_dict(TINY)
    text = params_yaml_text(params)
    comps = components.build(params.kfp.image)
    common = {"image": params.kfp.image, "task_name": "pretrain"}

    @dsl.pipeline(name="data-pretrain")
    def data_pretrain():
        data = comps.data(params_yaml=text, raw_dir="", volume_dir="", **common)
        comps.pretrain(params_yaml=text, data=data.outputs["data"], **common)

    root = tmp_path / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=False)
    data_pretrain()

    (out,) = root.glob("*/pretrain/executor_output.json")  # kfp.local keeps Metrics in their metadata
    logged = json.loads(out.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["ViT"] == reference["ViT"]  # the DVC health figure, in the KFP UI
    assert logged["vit.bitwise_accuracy"] == pytest.approx(reference["ViT"], abs=5e-4)
    (models,) = root.glob("*/pretrain/models")
    assert {"vit", "roberta", "gpt2"} <= {p.name for p in models.iterdir()}
