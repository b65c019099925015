"""Settings of input prompt tuning (``peft.prompt``); defaults = VL-Adapter's single-prompt run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlpeft.tuners.registry import MethodOptions


class PromptConfig(MethodOptions):
    """Trainable vectors before the encoder input (VL-Adapter ``--encoder_prompt_len 40 --mid_dim 800``)."""

    length: int = Field(40, ge=1, description="prompt tokens L")
    reparam: Literal["mlp", "none"] = Field(
        "mlp",
        description="mlp = Embedding(L, d) -> Linear(d, mid) -> Tanh -> Linear(mid, d); none = the table",
    )
    mid_dim: int = Field(800, ge=1, description="hidden width of the reparametrisation MLP")
    init_std: float = Field(0.02, gt=0, description="N(0, std) for the table and the MLP (BART's init)")
