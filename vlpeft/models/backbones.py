"""Loading the language backbones and their tokenizers, and reading widths from checkpoints.

Backbones are hub ids or local directories written by ``save_pretrained`` (the embedded world's
``vlpeft pretrain`` writes them exactly like hub models). Nothing here downloads when ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from torch import nn

from vlpeft.errors import ConfigError
from vlpeft.families import check_tower, family_of
from vlpeft.tasks import FAMILY_BACKBONE

VLTask = Literal["vqa", "caption", "generative"]  # model families (vlpeft.tasks.FAMILY_BACKBONE)
VL_TASKS: tuple[str, ...] = tuple(FAMILY_BACKBONE)

# The config field that names each task's backbone (used in error messages).
BACKBONE_FIELD: dict[str, str] = {family: f"model.{field}" for family, field in FAMILY_BACKBONE.items()}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence load reports and progress bars while loading (expected keys, e.g. the MLM head, are dropped
    on purpose); the previous verbosity comes back afterwards."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_config(name_or_path: str, field: str) -> Any:
    """The transformers config of a checkpoint; a missing or unreadable one is a ``ConfigError``."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{field}: cannot load a model config from {name_or_path!r} ({first})") from None


def width_of(config: Any) -> int:
    """The hidden width of a transformers config (``hidden_size`` is mapped for GPT-2, BART and T5 too; a CNN
    such as ConvNeXt has the width of its last stage)."""
    width = getattr(config, "hidden_size", None)
    if width is None and getattr(config, "hidden_sizes", None):
        width = config.hidden_sizes[-1]
    if width is None:
        raise ConfigError(
            f"cannot tell the width of a {config.model_type!r} model (no hidden_size in its config)"
        )
    return int(width)


def load_language_backbone(task: str, name_or_path: str) -> nn.Module:
    """The pre-trained language model of ``task``.

    vqa: the bare encoder (``AutoModel``, no pooler: the released code's pooler is a frozen random layer,
    pitfall P6, and our head reads the hidden state directly); caption: ``AutoModelForCausalLM``;
    generative: ``AutoModelForSeq2SeqLM``. A family in the table must list the task's tower; one outside
    the table loads when transformers can build it for the task.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    field = BACKBONE_FIELD[task]
    config = load_config(name_or_path, field)
    check_tower(str(config.model_type), task, f"{field}: {name_or_path!r}")
    family = family_of(str(config.model_type))
    kwargs = dict(family.load_kwargs) if family is not None else {}
    auto = {"vqa": AutoModel, "caption": AutoModelForCausalLM, "generative": AutoModelForSeq2SeqLM}[task]
    with quiet_transformers():
        try:
            return auto.from_pretrained(name_or_path, **kwargs)
        except (
            ValueError
        ) as exc:  # transformers: "Unrecognized configuration class ... for this kind of AutoModel"
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(
                f"{field}: {name_or_path!r} ({config.model_type!r}) cannot serve task {task!r}: {first}"
            ) from None


def load_tokenizer(name_or_path: str, field: str) -> Any:
    """The tokenizer saved beside a backbone; it must define a pad token (and EOS for generation)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{field}: cannot load a tokenizer from {name_or_path!r} ({first})") from None
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        # GPT-2 style tokenizers have no pad token; padding is never attended to nor supervised here.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"{field}: the tokenizer of {name_or_path!r} has neither a pad nor an EOS token")
    return tokenizer


# ``model.vision`` names of encoders whose features are imported, never computed here (transformers has no
# CLIP-ResNet): their width, for the model's visual input. A store of such features comes from
# ``vlpeft features-import`` (VL-Adapter's released h5 files) and records the same name as its encoder.
IMPORTED_FEATURE_WIDTHS: dict[str, int] = {"RN101": 2048}  # OpenAI CLIP ResNet-101, layer-4 grid


def vision_width(name_or_path: str) -> int:
    """Hidden width of the vision encoder checkpoint (read from its config only: no weights are loaded), or
    the width of an imported-features encoder (``IMPORTED_FEATURE_WIDTHS``)."""
    if name_or_path in IMPORTED_FEATURE_WIDTHS:
        return IMPORTED_FEATURE_WIDTHS[name_or_path]
    return width_of(load_config(name_or_path, "model.vision"))


def checkpoint_param_count(name_or_path: str) -> int | None:
    """Number of parameters stored in a local safetensors checkpoint, read from the file headers only.

    Used to count a vision encoder that is not attached (features precomputed) in the "whole model"
    total, as the papers report. ``None`` when there is no local safetensors checkpoint.
    """
    root = Path(name_or_path)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    from safetensors import safe_open

    total = 0
    for name in files:
        with safe_open(str(root / name), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                n = 1
                for dim in fh.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total
