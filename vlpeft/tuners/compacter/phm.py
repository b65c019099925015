"""Parameterized hypercomplex multiplication (PHM) layers, the building block of Compacter.

``PHMLinear(in, out, n)``: ``H = Σ_{i=1..n} A_i ⊗ W_i ∈ R^{in×out}`` with rules ``A ∈ R^{n×n×n}`` and
``W ∈ R^{n × in/n × out/n}``; ``y = x H + b`` (``x @ H``, not ``H^T``, as VL-Adapter's ``matvec_product``,
``VL-T5/src/adapters/hypercomplex/layers.py:L11-33``). Factorised: ``W_i = W_left,i W_right,i`` with
``W_left (n, in/n, k)``, ``W_right (n, k, out/n)``. Initialisation as VL-Adapter runs it: every ``W_i`` (or
``W_left,i``/``W_right,i``) Glorot-uniform with gain √2 (``w_init glorot-uniform``), ``A ~ N(0, 0.01²)``
(``phm_c_init normal``, ``phm_init_range 0.01``), ``b = 0``. Parameters: ``in·out/n + n³ + out`` (own rule),
``k(in + out) + n³ + out`` (factorised); a shared rule is counted once for the whole model.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PHMRule(nn.Module):
    """The rule matrices ``A`` (n, n, n): owned by one PHM layer, or registered once and shared."""

    def __init__(self, n: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.rule = nn.Parameter(torch.empty(n, n, n))
        nn.init.normal_(self.rule, std=init_std)


def kron_sum(rule: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_i rule_i ⊗ weights_i``: rule (n, a, c), weights (n, k, p) → (a·k, c·p)."""
    _, a, c = rule.shape
    _, k, p = weights.shape
    return torch.einsum("iac,ikp->akcp", rule, weights).reshape(a * k, c * p)


class PHMLinear(nn.Module):
    """``y = x @ Σ_i A_i ⊗ W_i + b`` (module docstring). ``shared_rule``: a ``PHMRule`` owned elsewhere; it
    is referenced, not registered, so its parameter appears once in ``named_parameters()``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n: int,
        *,
        factorized: bool = False,
        phm_rank: int = 1,
        shared_rule: PHMRule | None = None,
        rule_init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if in_features % n or out_features % n:
            raise ValueError(
                f"PHM layer {in_features}→{out_features}: both widths must be divisible by n={n}"
            )
        self.in_features, self.out_features, self.n = in_features, out_features, n
        self.factorized = factorized
        a, c = in_features // n, out_features // n
        if factorized:
            self.W_left = nn.Parameter(torch.empty(n, a, phm_rank))
            self.W_right = nn.Parameter(torch.empty(n, phm_rank, c))
            blocks = [self.W_left, self.W_right]
        else:
            self.W = nn.Parameter(torch.empty(n, a, c))
            blocks = [self.W]
        for block in blocks:
            for i in range(n):
                nn.init.xavier_uniform_(block.data[i], gain=math.sqrt(2))
        self.b = nn.Parameter(torch.zeros(out_features))
        if shared_rule is None:
            self.own_rule = PHMRule(n, rule_init_std)
        else:
            object.__setattr__(self, "_shared_rule", shared_rule)

    @property
    def rule(self) -> torch.Tensor:
        """The rule matrices ``A`` (n, n, n) this layer uses."""
        holder = self._modules.get("own_rule") or self.__dict__["_shared_rule"]
        return holder.rule

    def weights(self) -> torch.Tensor:
        """``W`` (n, in/n, out/n) (the product of the factors when factorised)."""
        return torch.bmm(self.W_left, self.W_right) if self.factorized else self.W

    def matrix(self) -> torch.Tensor:
        """``H = Σ_i A_i ⊗ W_i`` (in, out)."""
        return kron_sum(self.rule, self.weights())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix().to(x.dtype) + self.b.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, n={self.n}, factorized={self.factorized}"
