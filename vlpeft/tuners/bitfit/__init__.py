"""BitFit: only the biases of the backbone train (Ben Zaken et al. 2022); no new modules."""

from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="bitfit",
        implementation="vlpeft.tuners.bitfit.method:METHOD",
        vision_tower=True,
        state_files=("vlpeft_bitfit.safetensors",),
        description="every bias of the backbone (LayerNorm biases included); no bottleneck",
    )
)
