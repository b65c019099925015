"""The README's "Your own checkpoints and data" section tells the truth: its family table is the code's table,
and its worked example (ViT + BERT, routed LoRA, own VQA data) runs as written on tiny stand-ins."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlpeft.families import FAMILIES

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Your own checkpoints and data"


def _section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def _table_rows() -> list[list[str]]:
    block = _section().split("<!-- families-table")[1].split("<!-- /families-table -->")[0]
    rows = [r for r in block.splitlines() if r.startswith("|")][2:]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


TOWER = {
    "vision": "vision",
    "vqa_backbone": "vqa",
    "caption_backbone": "caption",
    "generative_backbone": "generative",
}


def test_the_family_table_is_the_codes_table():
    documented: dict[str, tuple[str, tuple[str, ...]]] = {}
    for tower_cell, families, lora, _adapter in _table_rows():
        tower = TOWER[re.search(r"\(`(\w+)`\)", tower_cell).group(1)]
        targets = tuple(re.findall(r"`(\w+)`", lora.split("(")[0]))
        for name in re.findall(r"`([\w-]+)`", families):
            documented[name] = (tower, targets)
    assert set(documented) == set(FAMILIES)
    for name, (tower, targets) in documented.items():
        assert FAMILIES[name].towers == {tower}, name
        assert FAMILIES[name].lora == targets, name


# ------------------------------------------------------------------------------------- the worked example


def _blocks(lang: str) -> list[str]:
    example = _section().split("### Worked example")[1]
    return re.findall(rf"```{lang}\n(.*?)```", example, flags=re.S)


def _stand_ins(root: Path) -> None:
    """my-vit (ViT, width 24), my-bert (BERT, width 16, WordPiece), my_vqa (12 images, any names)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast, ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    vit = ViTConfig(
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=32,
        patch_size=16,
    )
    ViTModel(vit, add_pooling_layer=False).save_pretrained(root / "my-vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "my-vit")
    words = ["is", "it", "red", "blue", "what", "color", "yes", "no", "?"]
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    bert = BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40,
    )  # fmt: skip
    BertModel(bert, add_pooling_layer=False).save_pretrained(root / "my-bert")
    tok.save_pretrained(root / "my-bert")
    records = []
    colors = {"red": (200, 30, 30), "blue": (30, 30, 200)}
    for i in range(12):
        name = f"holiday/IMG_{7000 + i}.jpeg" if i % 2 else f"scan {i}.png"
        color = "red" if i % 3 else "blue"
        path = root / "my_vqa" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), colors[color]).save(path)
        records.append({"image": name, "question": "what color is it?", "answers": [color] * 10})
        records.append({"image": name, "question": "is it red?", "answer": "yes" if color == "red" else "no"})
    (root / "my_vqa" / "train_vqa.json").write_text(json.dumps(records))


def test_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    from vlpeft.cli import main

    _stand_ins(tmp_path)
    monkeypatch.chdir(tmp_path)
    (yaml_block,) = _blocks("yaml")
    (tmp_path / "mine.yaml").write_text(yaml_block)
    (bash_block,) = _blocks("bash")
    commands = [shlex.split(line) for line in bash_block.strip().splitlines()]
    assert [c[:2] for c in commands] == [["vlpeft", "data"], ["vlpeft", "features"], ["vlpeft", "train"],
                                         ["vlpeft", "predict"]]  # fmt: skip
    for argv in commands:
        rc = main(argv[1:])
        out = capsys.readouterr()
        assert rc == 0, (argv, out.err)
    answer = out.out.strip().splitlines()[-1]
    assert answer in {"yes", "no", "red", "blue"}
    run = tmp_path / "runs" / "mine"
    meta = json.loads((run / "best" / "vlpeft_model.json").read_text())
    assert meta["peft"]["routing"] == "vl" and meta["model"]["projection"] == "linear"
    assert (
        meta["backbones"]["vision"]["path"] == "my-vit" and meta["backbones"]["language"]["path"] == "my-bert"
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test" in json.dumps(metrics)
    world = json.loads((tmp_path / "data" / "mine" / "world.json").read_text())
    assert world["counts"]["images"] == {"train": 10, "val": 1, "test": 1}


@pytest.mark.parametrize(
    "what", ["checkpoint folder", "peft.vision_target_modules", "interpolate_pos_encoding"]
)
def test_section_documents(what):
    assert what in _section()
