"""Issue 21: task prefixes the embedded tokenizer knows, NLVR2's image order, untruncated NLVR2 statements,
the image-shuffled control and the summary's gains over the controls."""

from __future__ import annotations

import json

import pytest
import torch
from multitask_helpers import multitask_params

from vlpeft.data.language import TASK_PREFIXES


def _params(root, routing="none", **model):
    params = multitask_params(root, routing)
    return params.model_copy(update={"model": params.model.model_copy(update=model)})


def _binding(mt_setup, routing="none", **model):
    from vlpeft.train.run import build_task

    world, root = mt_setup
    torch.manual_seed(0)
    return build_task(_params(root, routing, **model), "multitask", world, root / "features")


def test_each_task_prefix_has_its_own_known_ids_in_the_embedded_tokenizer(mt_setup):
    """The multi-task world's word tokenizer was trained on a corpus without the words vqa/gqa/nlvr/caption,
    so every prefix encoded to the same `<unk> :`; the corpus now starts each line with its task's prefix."""
    binding = _binding(mt_setup)
    model = binding.model
    unk = model.tokenizer.unk_token_id
    encoded = {}
    for task in TASK_PREFIXES:
        ids = model.encode_texts(["is there a red circle ?"], task=task)["input_ids"][0].tolist()
        assert unk not in ids, (task, ids)
        encoded[task] = ids[1]  # after BOS: the prefix word
    assert len(set(encoded.values())) == len(TASK_PREFIXES), encoded
    for task, word_id in encoded.items():
        assert model.tokenizer.convert_ids_to_tokens(word_id) == task


def test_nlvr_pair_gets_image_order_ids_0_and_1_and_a_swap_changes_the_embedding(mt_setup):
    """VL-Adapter's NLVR2 passes img_order_ids = [0]*V + [1]*V to its visual embedding (nlvr_model.py);
    with projection vl_t5 the right image's tokens get row 1 of the image-order embedding."""
    binding = _binding(mt_setup, projection="vl_t5")
    nlvr = binding.tasks["nlvr"]
    batch = binding.batch([binding._offsets["nlvr"] + i for i in range(4)])
    assert batch["visual"].shape[:2] == (4, 2)  # two pooled images per statement
    assert batch["image_order"].tolist() == [[0, 1]] * 4
    model = binding.model
    visual, order = batch["visual"], batch["image_order"]
    with torch.no_grad():
        embedded = model.encode_visual(visual, image_order=order)
        unordered = model.encode_visual(visual)  # every token image 0 (the bug's behaviour)
        swapped = model.encode_visual(visual.flip(1), image_order=order)
    emb = model.projection.image_order.weight
    torch.testing.assert_close(embedded[:, 0], unordered[:, 0])
    torch.testing.assert_close(embedded[:, 1] - unordered[:, 1], (emb[1] - emb[0]).expand(4, -1))
    # swapping left and right is not a permutation of the embedded tokens: the order embedding stays put
    assert not torch.allclose(swapped.flip(1), embedded, atol=1e-4)
    # the test split's fetch carries the same ids
    fetched = binding.visual(nlvr)(nlvr.val[:3])
    assert fetched["image_order"].tolist() == [[0, 1]] * 3


@pytest.mark.parametrize(("projection", "symmetric"), [("none", True), ("vl_t5", False)])
def test_vl_routing_tells_left_from_right_only_through_the_order_embedding(mt_setup, projection, symmetric):
    """`vl` routing with m = 2 pooled images is x_t (x_L^T x_L + x_R^T x_R): symmetric in left and right.
    Without the visual tokens (routing is then the model's only view of the images), a swap changes nothing
    unless the routing input carries the image-order embedding (projection vl_t5)."""
    binding = _binding(mt_setup, "vl", projection=projection, visual_prefix=False)
    model = binding.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # zero at init: make the routed branch matter
                p.normal_(std=0.5)
        if model.projection is not None:  # N(0, 0.02) at init; training moves it
            model.projection.image_order.weight.normal_(std=1.0)
    nlvr = binding.tasks["nlvr"]
    rows = nlvr.val[:4]
    fetch = binding.visual(nlvr)
    enc = nlvr.encode(model, rows)
    straight = fetch(rows)
    swapped = {**straight, "visual": straight["visual"].flip(1)}
    ids, mask = enc["input_ids"], enc["attention_mask"]
    choices = ("true", "false")
    logits = [model.score_choices(ids, mask, choices, task="nlvr", **v) for v in (straight, swapped)]
    change = float((logits[0] - logits[1]).abs().max())
    assert change < 1e-6 if symmetric else change > 1e-4, change


def test_nlvr_statements_are_not_cut_at_max_question_tokens(mt_setup):
    """VL-Adapter truncates VQA/GQA questions at 20 tokens but encodes NLVR2 statements whole."""
    binding = _binding(mt_setup)
    params = binding.params.model_copy(
        update={"data": binding.params.data.model_copy(update={"max_question_tokens": 5})}
    )
    nlvr, gqa = binding.tasks["nlvr"], binding.tasks["gqa"]
    nlvr.params = gqa.params = params
    statement = nlvr.val[0]
    long_enough = len(binding.model.token_ids(statement.sentence)) + 4  # + BOS, prefix, ":" and EOS
    assert long_enough > 5
    assert (
        binding.model.encode_texts([statement.sentence], task="nlvr", max_length=5)["input_ids"].shape[1] == 5
    )
    assert nlvr.encode(binding.model, [statement])["input_ids"].shape[1] == long_enough
    assert gqa.encode(binding.model, gqa.val[:1])["input_ids"].shape[1] <= 5


def test_shuffled_images_is_a_seeded_derangement_and_the_source_sees_it():
    from vlpeft.train.controls import ShuffledSource, shuffled_images

    ids = [5, 9, 2, 7, 11, 3]
    swap = shuffled_images([*ids, 9, 5], seed=1)  # repeats in a call: one entry per distinct image
    assert sorted(swap) == sorted(ids) and sorted(swap.values()) == sorted(ids)  # a bijection
    assert all(swap[i] != i for i in ids)  # nobody keeps their image
    assert swap == shuffled_images(ids, seed=1) and swap != shuffled_images(ids, seed=2)
    seen = []
    source = ShuffledSource(lambda i, p: seen.append((list(i), list(p))) or {}, seed=1)
    source([5, 9, 5], ["a", "b", "a"])
    assert seen == [([9, 5, 9], ["b", "a", "b"])]  # two images in the call: they trade places, paths too


def _run(root, name, scores, seed, variant, shuffled=None):
    test = {t: {"score": s} for t, s in zip(("vqa", "gqa", "nlvr", "caption"), scores, strict=True)}
    test["average"] = sum(scores) / 4
    model = {"method": "lora", "routing": "none", "seed": seed}
    metrics = {"variant": variant, "train": {"lr": 0.01}, "test": test, "val": {"last": 50.0},
               "test_checkpoint": "last", "model": model}  # fmt: skip
    if shuffled is not None:
        tasks = ("vqa", "gqa", "nlvr", "caption")
        metrics["test_shuffled"] = {t: {"score": s} for t, s in zip(tasks, shuffled, strict=True)}
    (root / name).mkdir()
    (root / name / "metrics.json").write_text(json.dumps(metrics))


def test_summary_shows_gains_over_blind_and_shuffled_with_spread_and_flags_rows_not_above_blind(tmp_path):
    from vlpeft.train.multitask.summary import write_summary

    for seed, (b, n, w) in enumerate([(50, 60, 51), (52, 61, 50), (48, 62, 49)]):
        _run(tmp_path, f"blind-{seed}", (b, 40, 50, 70), seed, "blind")
        # plain LoRA: +10 on VQA every seed; on NLVR2 the same as blind ± noise
        _run(tmp_path, f"lora-{seed}", (n, 45, 50 + (seed - 1) * 2, 90), seed, "lora",
             shuffled=(b, 40, 50, 60))  # fmt: skip
        _run(tmp_path, f"weak-{seed}", (w, 40, 50, 70), seed, "weak", shuffled=(w, 40, 50, 70))
    rows, _ = write_summary(tmp_path, None, tmp_path / "s.md", tmp_path / "s.json", None)
    by = {r["variant"]: r for r in rows}
    lora = by["lora"]
    assert lora["vs_blind"]["VQA"] == {"mean": 11.0, "std": 2.65, "n": 3}  # 10, 9, 14
    assert lora["vs_shuffled"]["VQA"] == {"mean": 11.0, "std": 2.65, "n": 3}
    assert lora["vs_blind"]["NLVR2"] == {"mean": 0.0, "std": 2.0, "n": 3}
    assert lora["not_above_blind"] == ["NLVR2"]
    assert by["weak"]["not_above_blind"] == ["VQA", "GQA", "NLVR2", "CIDEr"]
    assert by["blind"]["not_above_blind"] is None and by["blind"]["vs_blind"] == {}
    assert lora["VQA_std"] == 1.0 and lora["VQA"] == 61.0
    md = (tmp_path / "s.md").read_text()
    assert "| lora | lora | – | none | – | 0.01 | 3 | 61.00 ± 1.00 |" in md
    assert "| lora | +11.00 ± 2.65 | +11.00 ± 2.65 |" in md and "**no: NLVR2** |" in md
    assert "| blind | – | – |" in md and "(control) |" in md
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["rows"][1]["vs_blind"]["GQA"]["mean"] == 5.0
