"""Compacter: adapters whose projections are PHM layers (VL-Adapter's "Compacter" = a PHM-Adapter)."""

from vlpeft.tuners.compacter.config import CompacterConfig
from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="compacter",
        implementation="vlpeft.tuners.compacter.method:METHOD",
        options=CompacterConfig,
        bottleneck=True,
        sharing=("single", "per_task", "shared_up", "shared_down"),
        ranked=True,
        vision_tower=True,
        state_files=("vlpeft_compacter.safetensors",),
        markers=(".adapter.", "vlpeft_phm_rule."),
        description="PHM adapters (n=2, per-layer rules, full W: VL-Adapter's runs), routing after down",
    )
)
