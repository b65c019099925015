"""Settings of the bottleneck adapter (``peft.adapter``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlpeft.tuners.registry import MethodOptions


class AdapterConfig(MethodOptions):
    """Bottleneck adapter (Houlsby/Pfeiffer style, as in VL-Adapter and the routing paper)."""

    activation: str = "gelu"
    skip: bool = Field(True, description="internal skip: out = h + up(act(route(down(h))))")
    positions: list[Literal["attention", "ffn"]] = Field(default_factory=lambda: ["attention", "ffn"])
    init_std: float = Field(0.02, gt=0)
    shared_per_block: bool = Field(
        False,
        description="one adapter per transformer block, used at every position of that block (the released "
        "GPT-2 code); False = one adapter per position (VL-Adapter, the released RoBERTa code)",
    )
