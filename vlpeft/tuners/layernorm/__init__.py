"""LayerNorm-only tuning: the norms of ``peft.layernorm_scope`` train, nothing else; no new modules."""

from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="layernorm",
        implementation="vlpeft.tuners.layernorm.method:METHOD",
        vision_tower=True,
        state_files=("vlpeft_layernorm.safetensors",),
        description="only LayerNorms (blocks or all); no bottleneck",
    )
)
