"""LoRA (peft's own, with routing between A and B and the q/v thirds of fused QKV projections)."""

from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="lora",
        implementation="vlpeft.tuners.lora.method:METHOD",
        bottleneck=True,
        sharing=("single", "per_task"),
        ranked=True,
        vision_tower=True,
        state_files=("adapter_config.json", "adapter_model.safetensors", "extra_trainable.safetensors"),
        markers=(".lora_",),
        description="LoRA on the query/value projections (peft), routing between A and B",
    )
)
