"""Settings of Compacter (``peft.compacter``); defaults = VL-Adapter's released runs (a PHM-Adapter)."""

from __future__ import annotations

from pydantic import Field

from vlpeft.tuners.registry import MethodOptions


class CompacterConfig(MethodOptions):
    """PHM adapters: ``down``/``up`` are PHM layers ``x @ Σ_i A_i ⊗ W_i + b`` (Compacter, Mahabadi 2021).

    VL-Adapter's scripts run ``--hypercomplex_division 2 --shared_phm_rule False --factorized_phm False``: a
    rule ``A`` per layer and full ``W_i``, i.e. the Compacter paper's PHM-Adapter. ``factorized`` (``W_i =
    W_left,i W_right,i`` of rank ``phm_rank``) and ``shared_rule`` (one ``A`` for every layer of the model)
    give Compacter proper (both on) and its variants.
    """

    n: int = Field(2, ge=1, description="hypercomplex division n (--hypercomplex_division)")
    factorized: bool = Field(False, description="W_i = W_left,i @ W_right,i (--factorized_phm)")
    phm_rank: int = Field(1, ge=1, description="rank of the factorised W_i")
    shared_rule: bool = Field(False, description="one rule matrix set A for all layers (--shared_phm_rule)")
    rule_init_std: float = Field(
        0.01, gt=0, description="A ~ N(0, std²) (--phm_init_range, phm_c_init normal)"
    )
    activation: str = Field("gelu_new", description="VL-Adapter's adapter non-linearity")
    skip: bool = Field(True, description="out = h + up(act(route(down(h))))")
