"""Bottleneck adapters (``down → [route] → act → up (+h)``) on the sublayer outputs."""

from vlpeft.tuners.adapter.config import AdapterConfig
from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="adapter",
        implementation="vlpeft.tuners.adapter.method:METHOD",
        options=AdapterConfig,
        bottleneck=True,
        sharing=("single", "per_task", "shared_up", "shared_down"),
        ranked=True,
        vision_tower=True,
        state_files=("vlpeft_adapter.safetensors",),
        markers=(".adapter.",),
        description="bottleneck adapters after attention and feed-forward, routing after the down-projection",
    )
)
