"""No fine-tuning of the backbone: every parameter frozen (a frozen vision tower, a linear-probe baseline)."""

from vlpeft.tuners.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="frozen",
        implementation="vlpeft.tuners.frozen.method:METHOD",
        common_trainables=False,
        vision_tower=True,
        description="nothing trains in this tower",
    )
)
