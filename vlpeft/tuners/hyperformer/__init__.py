"""Hyperformer: adapters generated per (task, layer, position) by one hypernetwork per stack."""

from vlpeft.families import FAMILIES
from vlpeft.tuners.hyperformer.config import HyperformerConfig
from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="hyperformer",
        implementation="vlpeft.tuners.hyperformer.method:METHOD",
        options=HyperformerConfig,
        bottleneck=True,
        ranked=True,
        families=tuple(sorted(n for n, f in FAMILIES.items() if f.hyper)),  # encoder and decoder stacks
        state_files=("vlpeft_hyperformer.safetensors",),
        markers=("vlpeft_hyper.",),
        description="task-conditioned hypernetworks (Hyperformer++), routing after the generated down",
    )
)
