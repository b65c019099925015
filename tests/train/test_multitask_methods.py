"""Every VL-Adapter method trains in the multi-task loop on the tiny world, saves, and loads back (slow)."""

from __future__ import annotations

import pytest
import torch
from multitask_helpers import multitask_params

from vlpeft.tuners.registry import method_owns

METHODS = [
    {"method": "adapter", "sharing": "shared_up", "routing": "mul"},
    {"method": "lora", "sharing": "per_task"},
    {"method": "compacter", "routing": "vl"},
    {"method": "hyperformer", "routing": "vl", "hyperformer": {"task_embedding_dim": 8, "projected_dim": 4}},
    {"method": "prompt", "prompt": {"length": 4, "mid_dim": 16}},
    {"method": "bitfit"},
]


@pytest.mark.slow
@pytest.mark.parametrize("peft", METHODS, ids=lambda p: f"{p['method']}-{p.get('sharing', 'single')}")
def test_method_trains_in_the_multitask_loop_and_loads(mt_setup, tmp_path, peft):
    from vlpeft.models import build_vl_model, load_vl_model
    from vlpeft.train.run import train_task

    world, root = mt_setup
    params = multitask_params(root, peft.get("routing", "none"))
    params = params.model_copy(update={"multitask": params.multitask.model_copy(update={"epochs": 1})})
    cfg = params.multitask.peft.model_validate({**params.multitask.peft.model_dump(), **peft})
    params.multitask.peft = cfg
    flat = train_task(params, "multitask", world, root / "features", tmp_path, progress=False)
    assert flat["train.steps"] > 0 and "test.average" in flat
    trained = load_vl_model(tmp_path / "last")
    assert trained.peft_cfg.method == peft["method"] and trained.peft_cfg.tasks == params.multitask.tasks
    torch.manual_seed(0)
    fresh = build_vl_model("generative", params.model, cfg)
    init = dict(fresh.named_parameters())
    own = [
        n
        for n, _ in trained.named_parameters()
        if method_owns(n) or (peft["method"] == "bitfit" and n.endswith("bias"))
    ]
    assert own and any(not torch.equal(p, init[n]) for n, p in trained.named_parameters() if n in own)
