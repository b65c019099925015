"""`vlpeft pretrain` and `vlpeft features` on the tiny world: loadable models, metrics, the feature store."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoImageProcessor, AutoTokenizer, GPT2LMHeadModel, RobertaForMaskedLM, ViTModel

from vlpeft.cli import main
from vlpeft.data.features import FeatureStore
from vlpeft.data.images import image_table, load_image
from vlpeft.models.vision import VisionEncoder

TINY = [
    "pretrain.width=32",
    "pretrain.layers=1",
    "pretrain.heads=2",
    "pretrain.ffn=64",
    "pretrain.vit.image_size=32",
    "pretrain.vit.patch_size=8",
    "pretrain.vit.epochs=1",
    "pretrain.vit.batch_size=8",
    "pretrain.text.steps=4",
    "pretrain.text.batch_size=16",
]


def sets(values):
    return [arg for v in values for arg in ("--set", v)]


def test_pretrain_and_features_cli(tiny_world, tmp_path, capsys):
    models, metrics = tmp_path / "models", tmp_path / "pretrain_metrics.json"
    headline = tmp_path / "metrics" / "pretrain.json"
    args = ["pretrain", "--data", str(tiny_world), "--out", str(models), "--metrics", str(metrics)]
    code = main([*args, "--headline", str(headline), *sets(TINY)])
    assert code == 0
    assert "vit: val bitwise accuracy" in capsys.readouterr().out

    m = json.loads(metrics.read_text())
    # The DVC metrics file: one flat health figure, the ViT's validation bitwise accuracy (3 decimals).
    assert json.loads(headline.read_text()) == {"ViT": round(m["vit"]["bitwise_accuracy"], 3)}
    assert {"bitwise_accuracy", "prior_bitwise_accuracy", "count_accuracy", "val_loss"} <= set(m["vit"])
    assert set(m["vit"]["blocks"]) == {
        "color_shape",
        "size_shape",
        "count",
        "quadrant_color",
        "quadrant_shape",
        "quadrant_size",
    }
    assert {"val_loss", "val_masked_accuracy"} <= set(m["roberta"])
    assert {"val_loss", "val_token_accuracy"} <= set(m["gpt2"])
    assert m["tokenizer"]["vocab_size"] > 20

    # Loadable exactly like hub models, widths equal, no pooler in the ViT.
    vit = ViTModel.from_pretrained(models / "vit", add_pooling_layer=False)
    assert vit.pooler is None and vit.config.hidden_size == 32 and vit.config.image_size == 32
    assert AutoImageProcessor.from_pretrained(models / "vit").size == {"height": 32, "width": 32}
    roberta = RobertaForMaskedLM.from_pretrained(models / "roberta")
    gpt2 = GPT2LMHeadModel.from_pretrained(models / "gpt2")
    assert roberta.config.hidden_size == gpt2.config.n_embd == 32
    for name, model in (("roberta", roberta), ("gpt2", gpt2)):
        tok = AutoTokenizer.from_pretrained(models / name)
        assert len(tok) == model.config.vocab_size
        assert None not in (
            tok.pad_token_id,
            tok.bos_token_id,
            tok.eos_token_id,
            tok.mask_token_id,
            tok.unk_token_id,
        )
        assert json.loads((models / name / "vlpeft_pretrain.json").read_text())["part"] == name
    roberta_tok = AutoTokenizer.from_pretrained(models / "roberta")
    batch = roberta_tok(["is there a red circle ?"], return_tensors="pt")
    assert roberta(**batch).logits.shape == (1, batch["input_ids"].shape[1], len(roberta_tok))

    # The feature store covers every image of every split and holds the encoder's CLS feature.
    store_dir = tmp_path / "features"
    code = main(
        [
            "features",
            "--data",
            str(tiny_world),
            "--encoder",
            str(models / "vit"),
            "--out",
            str(store_dir),
            "--set",
            "features.dtype=float16",
            "--set",
            "features.shard_size=16",
        ]
    )
    assert code == 0
    store = FeatureStore(store_dir)
    table = image_table(tiny_world)
    assert sorted(store.image_ids) == sorted(i for i, _ in table) and len(store) == 40
    assert store.provenance["encoder"] == str(models / "vit") and store.dtype == "float16"
    enc = VisionEncoder.from_pretrained(str(models / "vit"))
    assert store.provenance["weights_sha256"] == enc.weights_hash()
    ids, paths = zip(*table[:5], strict=True)
    with torch.no_grad():
        ref = enc(enc.preprocess([load_image(p) for p in paths]))
    torch.testing.assert_close(store.get(list(ids)), ref, rtol=1e-3, atol=2e-3)


def test_tiny_backbones_fixture(tiny_backbones):
    assert ViTModel.from_pretrained(tiny_backbones["vit"], add_pooling_layer=False).config.hidden_size == 32
    assert GPT2LMHeadModel.from_pretrained(tiny_backbones["gpt2"]).config.n_embd == 32
    assert AutoTokenizer.from_pretrained(tiny_backbones["roberta"]).mask_token == "<mask>"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pretrain", "--data", "{tmp}/nowhere", "--out", "{tmp}/m"], "does not exist"),
        (
            ["pretrain", "--data", "{world}", "--out", "{tmp}/m", "--only", "bert"],
            "'bert' is not one of 'vit', 'roberta', 'gpt2', 'bart'",
        ),
        (["pretrain", "--data", "{world}", "--set", "pretrain.heads=3"], "divisible by heads"),
        (["features", "--data", "{world}", "--encoder", "{tmp}/no-model", "--out", "{tmp}/f"], "cannot load"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_world, tmp_path, capsys, args, message):
    argv = [a.format(tmp=tmp_path, world=tiny_world) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "f").exists()


def test_pretraining_is_seeded(tiny_world, tmp_path):
    from vlpeft.config import load_params
    from vlpeft.pretrain import pretrain_backbones

    params = load_params([], [*TINY, "pretrain.text.steps=3"])  # defaults + overrides, no params.yaml
    for run in ("a", "b"):
        pretrain_backbones(
            params, tiny_world, tmp_path / run, parts=("vit", "gpt2"), device=torch.device("cpu")
        )
    for part in ("vit", "gpt2"):
        a = (tmp_path / "a" / part / "model.safetensors").read_bytes()
        assert a == (tmp_path / "b" / part / "model.safetensors").read_bytes()
    assert not (tmp_path / "a" / "roberta").exists()
