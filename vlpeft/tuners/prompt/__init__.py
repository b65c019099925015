"""Prompt tuning on the encoder input (VL-Adapter's single prompt: length 40, tanh-MLP reparametrisation)."""

from vlpeft.tuners.prompt.config import PromptConfig
from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="prompt",
        implementation="vlpeft.tuners.prompt.method:METHOD",
        options=PromptConfig,
        families=("bart", "mbart", "t5", "mt5"),  # the encoder-decoder VL model prepends it to its encoder
        state_files=("vlpeft_prompt.safetensors",),
        markers=("vlpeft_prompt.",),
        description="trainable prompt vectors before the encoder input (no bottleneck: no routing)",
    )
)
