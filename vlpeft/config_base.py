"""The base every params section builds on: strict keys, no booleans for numbers, YAML's on/off words.

A leaf: it imports nothing of ``vlpeft``, so the method registry (``vlpeft.tuners.registry``: each method's
own section is a ``Section`` too) and ``vlpeft.config`` both build on it without importing each other.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

# Marks a field that changes how a stage runs, never what it computes (threads, heartbeats, retries, where
# trial checkpoints go): no stage declares it read, so DVC does not rerun anything for it (vlpeft.stages).
EXECUTION_ONLY = {"execution_only": True}
MAX_INT = 2**32 - 1  # no count, size or seed of ours needs more; larger values overflow torch/numpy seeding


def is_numeric(annotation: Any) -> bool:
    """Whether a field holds numbers: ``int``/``float``, optional or in a list."""
    if annotation in (int, float):
        return True
    return any(is_numeric(arg) for arg in get_args(annotation) if arg is not type(None))


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment too, and a
    boolean is never taken for a number (pydantic reads ``epochs: true`` as 1)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )  # inf/nan are never a setting (lr, alpha, dropout...): refused as "finite number" errors

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                values = value if isinstance(value, list) else [value]
                if field is None or not is_numeric(field.annotation):
                    continue
                if any(isinstance(v, bool) for v in values):
                    raise PydanticCustomError(
                        "bool_number",
                        "expected a number, got a boolean ({value})",
                        {"field": name, "value": repr(value)},
                    )
                if any(isinstance(v, int) and abs(v) > MAX_INT for v in values):
                    raise PydanticCustomError(
                        "bool_number",
                        "out of range, at most {limit} (got {value})",
                        {"field": name, "value": repr(value)[:40], "limit": MAX_INT},
                    )
        return data


def _yaml_switch(value: Any) -> Any:
    """YAML 1.1 reads an unquoted ``on`` / ``off`` as a boolean: take it as the word the user wrote."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


Switch = Annotated[Literal["on", "off"], BeforeValidator(_yaml_switch)]
AutoOrOff = Annotated[Literal["auto", "off"], BeforeValidator(_yaml_switch)]
