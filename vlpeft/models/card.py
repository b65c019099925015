"""The README (model card) ``save_vl_model`` writes into every saved model directory: what it is, what is in
it and how to load it."""

from __future__ import annotations

from typing import Any


def model_card(meta: dict[str, Any]) -> str:
    """The card of a model directory whose ``vlpeft_model.json`` holds ``meta``."""
    peft = meta.get("peft") or {}
    routing = peft.get("routing", "none")
    lines = [
        "---",
        "library_name: vlpeft",
        "tags:",
        "- vlpeft",
        f"- {meta.get('task')}",
        "---",
        "",
        f"# vlpeft {meta.get('task')} model ({meta.get('family')})",
        "",
        f"A `{meta.get('task')}` model trained with vlpeft: PEFT method `{peft.get('method')}`, routing "
        f"`{routing}`, rank `{peft.get('rank')}`. Its language backbone and vision encoder are referenced by "
        "path in `vlpeft_model.json` (not copied; `vlpeft register` packages them for the registry).",
        "",
        "## Files",
        "",
        "- `vlpeft_model.json`: task, model and PEFT settings, backbone references, trained parameter names.",
        "- `lm_peft/`: the language model's adapter (peft's `adapter_config.json` and",
        "  `adapter_model.safetensors`; its `README.md` says whether plain peft loads it).",
        "- `model.safetensors`: the other trained weights (VQA head, projection, trained vision parts).",
        "- `vlpeft_train.json`, `answers.json` (VQA): what inference needs besides the weights.",
        "",
        "## Loading",
        "",
        "```python",
        "from vlpeft.train.predict import Predictor",
        "predictor = Predictor.load(model_dir)  # or vlpeft.models.load_vl_model(model_dir) for the module",
        "```",
        "",
        "or `vlpeft predict --model <this dir> --image <file> ...`. Weights are safetensors only.",
        "",
    ]
    return "\n".join(lines)
