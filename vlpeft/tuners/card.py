"""The README (model card) ``save_peft`` writes into every saved PEFT directory: what it is, how to load it.

peft's ``save_pretrained`` writes a generic card template; ours replaces it with facts from the settings file
(method, routing, rank, family, trainable count) and the one way to load this directory correctly: plain peft
for adapters it loads exactly (``vlpeft.tuners.lora.portable``), else ``vlpeft.tuners.load_peft``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"


def _plain_peft(out_dir: Path) -> bool | None:
    """True/False: plain peft loads this LoRA adapter correctly / refuses it; None: not a peft adapter."""
    from vlpeft.tuners.lora.portable import CONFIG_FILE, is_vlpeft_only

    path = out_dir / CONFIG_FILE
    if not path.is_file():
        return None
    return not is_vlpeft_only(json.loads(path.read_text()))


def card_text(out_dir: Path, state: dict[str, Any]) -> str:
    """The model card of the saved directory ``out_dir`` whose settings file holds ``state``."""
    peft = state.get("peft") or {}
    method, routing = state.get("method"), peft.get("routing", "none")
    plain = _plain_peft(out_dir)
    front = ["---", "library_name: peft" if plain else "library_name: vlpeft", "tags:", "- vlpeft"]
    front += [f"- {method}"] + ([f"- routing-{routing}"] if routing != "none" else []) + ["---", ""]
    lines = [
        f"# vlpeft {method} adapter (routing `{routing}`)",
        "",
        f"Saved by `vlpeft.tuners.save_peft` for a `{state.get('family')}` model: method `{method}`, "
        f"routing `{routing}`, rank `{peft.get('rank')}`, sharing `{peft.get('sharing', 'single')}`, "
        f"{len(state.get('trainable') or [])} trained tensors. Settings: `vlpeft_peft.json`.",
        "",
        "## Loading",
        "",
    ]
    if plain:
        lines += [
            "Plain peft loads it with the same outputs as vlpeft (trained LayerNorms are `modules_to_save`):",
            "",
            "```python",
            "from peft import PeftModel",
            "model = PeftModel.from_pretrained(base_model, adapter_dir)",
            "```",
            "",
        ]
    elif plain is False:
        lines += [
            "**Plain peft cannot load this adapter correctly and refuses it** (its `adapter_config.json` "
            "says why in `task_type`). Load it with vlpeft:",
            "",
        ]
    lines += [
        "```python",
        "from vlpeft.tuners import load_peft, visual_context",
        "model = load_peft(base_model, adapter_dir)",
        *(
            ["with visual_context(x_v):  # routed layers read the visual features (batch, m, width)",
             "    out = model(input_ids=ids)"]
            if routing != "none"
            else []
        ),
        "```",
        "",
        "`base_model` is the language model the adapter was trained on (the `language` backbone named in the "
        "enclosing model directory's `vlpeft_model.json`, when there is one).",
        "",
    ]  # fmt: skip
    return "\n".join(front + lines)


def write_card(out_dir: Path, state: dict[str, Any]) -> None:
    """Write the model card of ``out_dir`` (a staging directory being filled by ``save_peft``)."""
    (out_dir / CARD_FILE).write_text(card_text(out_dir, state))
