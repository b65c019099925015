"""Full fine-tuning: every parameter of the model trains (VL-Adapter's 100 % row)."""

from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="full",
        implementation="vlpeft.tuners.full.method:METHOD",
        common_trainables=False,
        vision_tower=True,
        state_files=("vlpeft_full.safetensors",),
        description="full fine-tuning (every parameter)",
    )
)
