"""Sharing across tasks (single / per_task / shared_up / shared_down) for adapters and Compacter."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from tuner_helpers import VOCAB, WIDTH, tiny_bart

from vlpeft.config import PeftConfig
from vlpeft.errors import ConfigError
from vlpeft.tuners import apply_peft, load_peft, save_peft, task_context, trainable_names
from vlpeft.tuners.adapter.layer import adapter_modules

TASKS = ["vqa", "gqa", "nlvr"]
R = 4
IDS = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))


def _model(sharing: str, method: str = "adapter"):
    model = apply_peft(tiny_bart(), PeftConfig(method=method, rank=R, sharing=sharing, tasks=TASKS), "bart")
    with torch.no_grad():  # zero-initialised biases would block the gradients of the other half
        for n, p in model.named_parameters():
            if ".adapter." in n and n.endswith((".bias", ".b")):
                p.add_(0.1)
    return model


def _step(model, task: str) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    with task_context(task):
        model(input_ids=IDS, labels=IDS).loss.backward()
    opt.step()


@pytest.mark.parametrize("method", ["adapter", "compacter"])
@pytest.mark.parametrize(
    "sharing,down_per_task,up_per_task",
    [
        ("single", False, False),
        ("per_task", True, True),
        ("shared_up", True, False),
        ("shared_down", False, True),
    ],
)
def test_shared_means_one_object_and_per_task_means_distinct(method, sharing, down_per_task, up_per_task):
    model = _model(sharing, method)
    adapters = adapter_modules(model)
    assert len(adapters) == 5  # BART 1+1 layers: 2 encoder + 3 decoder positions
    for _, adapter in adapters:
        for part, per_task in ((adapter.down, down_per_task), (adapter.up, up_per_task)):
            assert isinstance(part, torch.nn.ModuleDict) is per_task
            if per_task:
                assert list(part) == TASKS and len({id(part[t]) for t in TASKS}) == len(TASKS)
    params = list(model.named_parameters())
    assert len({id(p) for _, p in params}) == len(params) == len({n for n, _ in params})


def test_counts_of_the_sharing_modes():
    d, t = WIDTH, len(TASKS)

    def own(model):
        return sum(p.numel() for n, p in model.named_parameters() if ".adapter." in n)

    down, up = d * R + R, R * d + d
    assert own(_model("single")) == 5 * (down + up)
    assert own(_model("per_task")) == 5 * t * (down + up)
    assert own(_model("shared_up")) == 5 * (t * down + up)
    assert own(_model("shared_down")) == 5 * (down + t * up)


@pytest.mark.parametrize("sharing", ["per_task", "shared_up", "shared_down"])
def test_a_step_on_one_task_leaves_the_other_tasks_own_parameters_bit_identical(sharing):
    model = _model(sharing)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, "gqa")
    for name, p in model.named_parameters():
        if ".adapter." not in name:
            continue
        own_task = next((t for t in TASKS if f".{t}." in name), None)
        unchanged = torch.equal(p, before[name])
        if own_task is None or own_task == "gqa":
            assert not unchanged, name  # shared halves and gqa's own halves train
        else:
            assert unchanged, name


def test_per_task_adapters_need_the_task_and_tasks():
    model = _model("per_task")
    with pytest.raises(RuntimeError, match="per-task adapter needs the batch's task"):
        model(input_ids=IDS, labels=IDS)
    with pytest.raises(ConfigError, match=r"needs peft\.tasks"):
        apply_peft(tiny_bart(), PeftConfig(method="adapter", sharing="per_task"), "bart")
    with pytest.raises(ValidationError, match="sharing=shared_up is not available for method lora"):
        PeftConfig(method="lora", sharing="shared_up", tasks=TASKS)  # refused when params load


@pytest.mark.parametrize("method,sharing", [("adapter", "per_task"), ("compacter", "shared_up")])
def test_save_load_keeps_every_tasks_modules(tmp_path, method, sharing):
    model = _model(sharing, method).eval()
    _step(model, "vqa")
    _step(model, "nlvr")
    model.eval()
    with torch.no_grad():
        want = {t: _logits(model, t) for t in TASKS}
    save_peft(model, tmp_path / "peft")
    loaded = load_peft(tiny_bart(), tmp_path / "peft").eval()
    with torch.no_grad():
        for t in TASKS:
            torch.testing.assert_close(_logits(loaded, t), want[t], rtol=0, atol=0)
    assert sorted(trainable_names(load_peft(tiny_bart(), tmp_path / "peft", is_trainable=True))) == sorted(
        trainable_names(model)
    )


def _logits(model, task: str) -> torch.Tensor:
    with task_context(task):
        return model(input_ids=IDS, labels=IDS).logits
