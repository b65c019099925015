"""The family matrix: every family of ``vlpeft.families`` in every tower it can take, on tiny checkpoints
built from its transformers config (``family_zoo.py``): features, a few training steps with LoRA, with an
adapter and with routing, save, load and predict. A family outside the table is one line naming the tower's
targets setting, and setting it works."""

from __future__ import annotations

import re

import pytest
import torch
from family_zoo import LANGUAGE_TASK, VISION, WIDTH, build_zoo
from PIL import Image
from pydantic import ValidationError
from vl_helpers import peft, word_tokenizer

from vlpeft.config import ModelConfig
from vlpeft.errors import ConfigError
from vlpeft.families import FAMILIES
from vlpeft.models import build_vl_model, load_vl_model, save_vl_model
from vlpeft.models.vision import VisionEncoder
from vlpeft.tuners import RoutedLoraLinear
from vlpeft.tuners.adapter.layer import BottleneckAdapter


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> dict[str, str]:
    return build_zoo(tmp_path_factory.mktemp("zoo"), word_tokenizer())


def _images(n: int, size: int = 40) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


POOLING = {"siglip": "pooler", "convnext": "pooler"}  # no CLS token: the checkpoint's own pooled output


def _cfg(zoo, task: str, lm: str, vision: str = "vit", **kw) -> ModelConfig:
    field = {"vqa": "vqa_backbone", "caption": "caption_backbone", "generative": "generative_backbone"}[task]
    return ModelConfig(vision=zoo[vision], **{field: zoo[lm]}, **kw)


def _train(model, batch: dict, steps: int = 2) -> None:
    """A couple of AdamW steps on ``batch``; the loss must be finite."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _batch(model, task: str, visual: dict) -> dict:
    if task == "vqa":
        return {
            **model.encode_questions(["what color ?", "how many ?"]),
            "targets": torch.rand(2, 3),
            **visual,
        }
    if task == "caption":
        return {**model.encode_captions(["a red circle", "two blue square"]), **visual}
    return {
        **model.encode_texts(["what color ?", "is there a circle ?"], task="vqa"),
        "labels": model.encode_targets(["red", "yes"]),
        **visual,
    }


def _predict(model, task: str, visual: dict):
    with torch.no_grad():
        if task == "vqa":
            return model.predict(**model.encode_questions(["what color ?", "how many ?"]), **visual)
        if task == "caption":
            return model.generate(max_new_tokens=3, **visual)
        return model.generate(max_new_tokens=3, **visual, **model.encode_texts(["what color ?", "a ?"]))


def _changed(before: dict[str, torch.Tensor], model) -> set[str]:
    return {n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())}


# ---------------------------------------------------------------------------------------------- the table


def test_every_family_of_the_zoo_is_in_the_table_and_its_names_exist(zoo):
    """The table's LoRA targets and adapter positions name modules that exist in the installed transformers
    (each family's own model class, built from its config)."""
    from transformers import AutoModel

    assert set(VISION) | set(LANGUAGE_TASK) <= set(FAMILIES)
    for name in [*VISION, *LANGUAGE_TASK]:
        model = AutoModel.from_pretrained(zoo[name])
        fam = FAMILIES[str(model.config.model_type)]
        modules = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Module)]
        for target in fam.lora:
            assert any(n == target or n.endswith("." + target) for n in modules), (name, target)
        for position, pattern in fam.adapter.items():
            assert any(re.search(pattern, n) for n in modules), (name, position)


# ------------------------------------------------------------------------------------------ vision towers


@pytest.mark.parametrize("name", VISION)
def test_vision_features(zoo, name, tmp_path):
    """The features stage's extraction runs every vision family (pooled; tokens where it has a token grid)."""
    from vlpeft.data.features import FeatureStore, extract_features

    enc = VisionEncoder.from_pretrained(zoo[name], pooling=POOLING.get(name, "cls"))
    paths = []
    for i, img in enumerate(_images(3)):
        paths.append((i + 1, tmp_path / f"im{i}.png"))
        img.save(paths[-1][1])
    grid = FAMILIES[name].token_grid
    meta = extract_features(enc, paths, tmp_path / "store", kind="both" if grid else "pooled", batch_size=2)
    store = FeatureStore(tmp_path / "store")
    assert meta["width"] == WIDTH and store.num_tokens("pooled") == 1
    pooled = store.get([1, 2, 3], "pooled")
    assert pooled.shape == (3, 1, WIDTH) and torch.isfinite(pooled).all()
    if grid:
        m = FAMILIES[name].prefix_tokens + enc.grid**2
        assert store.num_tokens("tokens") == m == enc.num_tokens("tokens")
        # features.grid_pool drops the family's own prefix tokens (DeiT 2, SigLIP 0), then max-pools the grid
        extract_features(enc, paths, tmp_path / "pooled2", kind="tokens", batch_size=2, grid_pool=(2, 2))
        tokens = store.get([1], "tokens")[0, FAMILIES[name].prefix_tokens :]
        grid_map = tokens.T.reshape(1, WIDTH, enc.grid, enc.grid)
        expected = torch.nn.functional.adaptive_max_pool2d(grid_map, (2, 2)).flatten(2).transpose(1, 2)[0]
        torch.testing.assert_close(FeatureStore(tmp_path / "pooled2").get([1], "tokens")[0], expected)
    else:
        with pytest.raises(ConfigError, match="feature map, not tokens"):
            enc(enc.preprocess(_images(1)), kind="tokens")


@pytest.mark.parametrize(
    ("name", "pooling", "suggestion"),
    [
        ("dinov2", "pooler", "use features.pooling: cls"),
        ("siglip", "cls", "pooler"),
        ("convnext", "cls", "pooler"),
    ],
)
def test_pooling_the_family_lacks_is_one_line_with_the_way_out(zoo, name, pooling, suggestion):
    with pytest.raises(ConfigError, match=re.escape(suggestion)):
        VisionEncoder.from_pretrained(zoo[name], pooling=pooling)


@pytest.mark.parametrize("tower", ["lora", "adapter"])
@pytest.mark.parametrize("name", VISION)
def test_vision_tower_trains_saves_loads_predicts(zoo, name, tower, tmp_path):
    """Each vision family as a trained tower (LoRA / adapter on its default targets) under a routed BERT."""
    cfg = _cfg(zoo, "vqa", "bert", vision=name, vision_tower=tower)
    model = build_vl_model(
        "vqa", cfg, peft(routing="mul"), n_answers=3, vision_pooling=POOLING.get(name, "cls")
    )
    vision_trainable = {n for n, p in model.vision.named_parameters() if p.requires_grad}
    marker = ".lora_" if tower == "lora" else ".adapter."
    assert any(marker in n for n in vision_trainable)
    pixels = model.vision.preprocess(_images(2))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train(model, _batch(model, "vqa", {"pixel_values": pixels}))
    assert any(n.startswith("vision.") and marker in n for n in _changed(before, model))
    save_vl_model(model, tmp_path / "m")
    loaded = load_vl_model(tmp_path / "m")
    with torch.no_grad():
        enc = model.encode_questions(["what color ?", "how many ?"])
        torch.testing.assert_close(
            loaded(**enc, pixel_values=pixels).logits,
            model(**enc, pixel_values=pixels).logits,
            rtol=0,
            atol=0,
        )
    assert torch.equal(
        _predict(loaded, "vqa", {"pixel_values": pixels}), _predict(model, "vqa", {"pixel_values": pixels})
    )


# ---------------------------------------------------------------------------------------- language towers

METHODS = {
    "lora": {"method": "lora"},
    "adapter_routed": {"method": "adapter", "routing": "vl"},
    "lora_routed": {"method": "lora", "routing": "mul"},
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", list(LANGUAGE_TASK))
def test_language_tower_trains_saves_loads_predicts(zoo, name, method, tmp_path):
    task = LANGUAGE_TASK[name]
    model = build_vl_model(task, _cfg(zoo, task, name), peft(**METHODS[method]), n_answers=3)
    layer = BottleneckAdapter if method.startswith("adapter") else torch.nn.Module
    if method == "lora_routed":
        assert any(isinstance(m, RoutedLoraLinear) for m in model.lm.modules())
    if layer is BottleneckAdapter:
        assert any(isinstance(m, BottleneckAdapter) for m in model.lm.modules())
    g = torch.Generator().manual_seed(1)
    visual = {"visual": torch.randn(2, 1, WIDTH, generator=g)}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train(model, _batch(model, task, visual))
    peft_marker = ".adapter." if layer is BottleneckAdapter else "lora_"
    assert any(peft_marker in n for n in _changed(before, model)), "the PEFT weights did not train"
    save_vl_model(model, tmp_path / "m")
    loaded = load_vl_model(tmp_path / "m")
    batch = _batch(model, task, visual)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    expected, got = _predict(model, task, visual), _predict(loaded, task, visual)
    assert torch.equal(expected, got) if task == "vqa" else expected == got


# ----------------------------------------------------------------------------------- outside the table


@pytest.fixture(scope="session")
def outsiders(tmp_path_factory, zoo) -> dict[str, str]:
    """A vision family (ViT-MSN) and a decoder (OPT) that the table does not list."""
    import transformers as tf

    root = tmp_path_factory.mktemp("outsiders")
    torch.manual_seed(0)
    msn = tf.ViTMSNModel(
        tf.ViTMSNConfig(
            hidden_size=WIDTH,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=16,
        )
    )
    msn.save_pretrained(root / "msn")
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "msn")
    tok = word_tokenizer()
    opt = tf.OPTForCausalLM(
        tf.OPTConfig(
            vocab_size=len(tok),
            hidden_size=WIDTH,
            word_embed_proj_dim=WIDTH,
            ffn_dim=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    opt.save_pretrained(root / "opt")
    tok.save_pretrained(root / "opt")
    return {"msn": str(root / "msn"), "opt": str(root / "opt")}


@pytest.mark.parametrize("tower", ["lora", "adapter"])
def test_vision_family_outside_the_table_names_its_own_targets_setting_which_works(zoo, outsiders, tower):
    cfg = ModelConfig(vision=outsiders["msn"], vqa_backbone=zoo["bert"], vision_tower=tower)
    assert "vit_msn" not in FAMILIES
    with pytest.raises(ConfigError) as err:
        build_vl_model("vqa", cfg, peft(), n_answers=3)
    line = str(err.value)
    assert "\n" not in line and "peft.vision_target_modules" in line and "'vit_msn'" in line
    targets = ["q_proj", "v_proj"] if tower == "lora" else ["o_proj", "fc2"]
    model = build_vl_model("vqa", cfg, peft(vision_target_modules=targets), n_answers=3)
    marker = ".lora_" if tower == "lora" else ".adapter."
    adapted = {
        n.split(marker)[0] for n, p in model.vision.named_parameters() if p.requires_grad and marker in n
    }
    assert adapted and all(n.rsplit(".", 1)[-1] in targets for n in adapted)
    # the language tower keeps its own (table) targets
    assert any("attention.self.query" in n for n, p in model.lm.named_parameters() if p.requires_grad)
    pixels = model.vision.preprocess(_images(2))
    _train(model, _batch(model, "vqa", {"pixel_values": pixels}), steps=1)


def test_language_family_outside_the_table_names_peft_target_modules_which_works(outsiders):
    cfg = ModelConfig(vision=outsiders["msn"], caption_backbone=outsiders["opt"])
    with pytest.raises(ConfigError) as err:
        build_vl_model("caption", cfg, peft(routing="vl"))
    line = str(err.value)
    assert "\n" not in line and "peft.target_modules" in line and "model.caption_backbone" in line
    model = build_vl_model("caption", cfg, peft(routing="vl", target_modules=["q_proj", "v_proj"]))
    assert sum(isinstance(m, RoutedLoraLinear) for m in model.lm.modules()) == 2
    visual = {"visual": torch.randn(2, 1, WIDTH)}
    _train(model, _batch(model, "caption", visual), steps=1)
    assert len(_predict(model, "caption", visual)) == 2


def test_known_family_in_a_tower_it_cannot_take_is_one_line(zoo):
    with pytest.raises(ConfigError, match=r"model\.vqa_backbone takes one of .*bert"):
        build_vl_model("vqa", _cfg(zoo, "vqa", "gpt2"), peft(), n_answers=3)
    with pytest.raises(ConfigError, match=r"model\.vision takes one of .*vit"):
        VisionEncoder.from_pretrained(zoo["bert"])


# ---------------------------------------------------------------------------------------------- resolution


@pytest.fixture(scope="session")
def vit_other_resolution(tmp_path_factory) -> str:
    """A ViT whose position embeddings are for 64 px while its image processor makes 32 px images (a
    checkpoint converted at another resolution)."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    path = tmp_path_factory.mktemp("vit64")
    torch.manual_seed(0)
    cfg = ViTConfig(
        hidden_size=WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=64,
        patch_size=16,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def test_vit_at_another_resolution_interpolates_its_position_embeddings(vit_other_resolution):
    """The defect of issue 23 (a raw "Input image size (32*32) doesn't match model (64*64)" traceback)."""
    from transformers import ViTModel

    enc = VisionEncoder.from_pretrained(vit_other_resolution)
    pixels = enc.preprocess(_images(2))
    assert tuple(pixels.shape[-2:]) == (32, 32) and enc.native_size == (64, 64)
    tokens = enc(pixels, kind="tokens")
    assert tokens.shape == (2, 1 + 2 * 2, WIDTH) and enc.num_tokens("tokens") == 5
    # the same as transformers' own interpolation, called directly
    vit = ViTModel.from_pretrained(vit_other_resolution, add_pooling_layer=False).eval()
    with torch.no_grad():
        expected = vit(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)


def test_features_cli_on_a_vit_at_another_resolution(vit_other_resolution, tmp_path):
    """End to end through ``vlpeft features`` (the command of the issue's report)."""
    import json

    from vlpeft.data.formats import ImageEntry, karpathy
    from vlpeft.io import atomic_dir

    root = tmp_path / "data"
    with atomic_dir(root) as tmp:
        (tmp / "images" / "train").mkdir(parents=True)
        for i, img in enumerate(_images(2)):
            img.save(tmp / "images" / "train" / f"{i}.png")
        entries = [ImageEntry(i + 1, "train", f"{i}.png", ["a"]) for i in range(2)]
        (tmp / "dataset_coco.json").write_text(json.dumps(karpathy(entries)))
    from vlpeft.cli import main

    argv = ["features", "--data", str(root), "--out", str(tmp_path / "f"), "--encoder", vit_other_resolution]
    assert main([*argv, "--set", "features.kind=tokens"]) == 0
    index = json.loads((tmp_path / "f" / "index.json").read_text())
    assert index["num_tokens"]["tokens"] == 5


def test_a_family_that_cannot_interpolate_is_one_line(vit_other_resolution, monkeypatch):
    """Without ``interpolate_pos_encoding`` in the model's forward, another resolution is refused clearly."""
    enc = VisionEncoder.from_pretrained(vit_other_resolution)
    pixels = enc.preprocess(_images(1))

    class NoFlag(type(enc.model)):
        def forward(self, pixel_values):  # the signature of a family without the flag
            return super().forward(pixel_values=pixel_values)

    enc.model.__class__ = NoFlag
    with pytest.raises(ConfigError, match=r"images of 32x32 but its position embeddings are for 64x64"):
        enc(pixels)


def test_model_image_size_overrides_the_processor_everywhere(vit_other_resolution, zoo, tmp_path):
    """``model.image_size`` (params) sets the resolution of features, of the encoder in the loop and of a
    loaded model; the position embeddings follow by interpolation."""
    enc = VisionEncoder.from_pretrained(vit_other_resolution, image_size=48)
    pixels = enc.preprocess(_images(2))
    assert tuple(pixels.shape[-2:]) == (48, 48) and enc(pixels, kind="tokens").shape == (2, 1 + 3 * 3, WIDTH)
    assert enc.preprocessing_config()["size"] == {"height": 48, "width": 48}  # the store's provenance says so
    cfg = ModelConfig(
        vision=vit_other_resolution, vqa_backbone=zoo["bert"], vision_tower="lora", image_size=48
    )
    model = build_vl_model("vqa", cfg, peft(routing="mul"), n_answers=3)
    assert model.vision.input_size == (48, 48)
    save_vl_model(model, tmp_path / "m")
    assert load_vl_model(tmp_path / "m").vision.input_size == (48, 48)
    with pytest.raises(ValidationError, match="image_size"):
        ModelConfig(image_size=0)
