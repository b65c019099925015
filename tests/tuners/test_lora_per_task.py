"""Per-task LoRA: peft adapters named by task, chosen by the task context, all trainable, saved, loaded."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tuner_helpers import VOCAB, randomize_lora_b, tiny_bart

from vlpeft.config import PeftConfig
from vlpeft.tuners import apply_peft, load_peft, save_peft, task_context, trainable_names

TASKS = ["vqa", "gqa", "caption"]
IDS = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
CFG = PeftConfig(
    method="lora", rank=4, alpha=8, sharing="per_task", tasks=TASKS, bias="all", train_layernorm=False
)


def _ours():
    model = apply_peft(tiny_bart(), CFG, "bart").eval()
    randomize_lora_b(model)
    return model


def _out(model, task):
    with task_context(task), torch.no_grad():
        return model(input_ids=IDS, labels=IDS).logits


def test_task_context_selects_the_tasks_adapter_like_peft_set_adapter():
    ours = _ours()
    ref = get_peft_model(
        tiny_bart(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), "vqa"
    )
    for task in TASKS[1:]:
        ref.add_adapter(task, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    ref.load_state_dict({n: p for n, p in ours.state_dict().items()}, strict=True)
    ref.eval()
    outs = {}
    for task in TASKS:
        ref.set_adapter(task)
        with torch.no_grad():
            want = ref(input_ids=IDS, labels=IDS).logits
        outs[task] = _out(ours, task)
        torch.testing.assert_close(outs[task], want, rtol=0, atol=0)
    assert not torch.equal(outs["vqa"], outs["gqa"])


def test_every_tasks_adapter_trains_and_a_step_reaches_only_the_current_task():
    model = _ours()
    names = trainable_names(model)
    for task in TASKS:
        assert any(f".lora_A.{task}." in n for n in names) and any(f".lora_B.{task}." in n for n in names)
    assert any(n.endswith("q_proj.base_layer.bias") for n in names)  # bias all: every bias trains too
    with task_context("gqa"):
        model(input_ids=IDS, labels=IDS).loss.backward()
    for name, p in model.named_parameters():
        if ".lora_" in name:
            got = p.grad is not None and bool(p.grad.abs().sum() > 0)
            assert got is (".gqa." in name), name


def test_a_forward_without_task_is_an_error():
    with pytest.raises(RuntimeError, match="per-task LoRA layer needs the batch's task"):
        _ours()(input_ids=IDS, labels=IDS)


def test_save_load_round_trip_of_every_tasks_adapter(tmp_path):
    model = _ours()
    want = {t: _out(model, t) for t in TASKS}
    save_peft(model, tmp_path / "peft")
    assert all((tmp_path / "peft" / t / "adapter_model.safetensors").is_file() for t in TASKS)
    loaded = load_peft(tiny_bart(), tmp_path / "peft").eval()
    for task in TASKS:
        torch.testing.assert_close(_out(loaded, task), want[task], rtol=0, atol=0)
    again = load_peft(tiny_bart(), tmp_path / "peft", is_trainable=True)
    assert sorted(trainable_names(again)) == sorted(trainable_names(model))
