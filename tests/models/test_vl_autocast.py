"""bf16 autocast (what training uses on CUDA) runs every family with routing; tested here on CPU."""

from __future__ import annotations

import pytest
import torch
from vl_helpers import peft, randomize_peft

from vlpeft.models import build_vl_model


@pytest.mark.parametrize(
    ("task", "method"), [("vqa", "lora"), ("caption", "adapter"), ("generative", "lora")]
)
def test_bf16_autocast_forward_backward_and_generate(model_cfg, task, method):
    model = build_vl_model(
        task, model_cfg, peft(method=method, routing="vl"), n_answers=3 if task == "vqa" else None
    )
    randomize_peft(model)
    visual = torch.randn(2, 2, 16)
    if task == "vqa":
        batch = {
            **model.encode_questions(["what color ?", "is there a circle ?"]),
            "targets": torch.rand(2, 3),
        }
    elif task == "caption":
        batch = model.encode_captions(["a red circle", "a blue square"])
    else:
        batch = {
            **model.encode_texts(["what color ?", "how many ?"]),
            "labels": model.encode_targets(["red", "two"]),
        }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, visual=visual)
        assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if task != "vqa":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert len(model.eval().generate(visual, max_new_tokens=3, num_beams=2)) == 2
