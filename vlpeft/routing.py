"""Parameter-free routing functions for low-rank bottlenecks (Qu, Tuytelaars, Moens, ECCV 2024).

Notation (paper-notes §A.1): inside a bottleneck of rank ``r`` the text hidden states ``X_t`` (B×n×d) and the
frozen visual features ``X_v`` (B×m×d) both go through the **same** down-projection ``A`` (r×d)::

    x_t = X_t A^T        (B, n, r)        x_v = X_v A^T        (B, m, r)

and a routing function ``z = f(x_t, x_v)`` (B, n, r) replaces ``x_t`` before the up-projection. No parameters.

=============  =====================================  =============================================
kind           z for m = 1 (pooled visual vector)       z for m > 1 (token features)
=============  =====================================  =============================================
``none``       ``x_t``                                  ``x_t``
``add``        ``x_t + x_v``                            ``x_t + mean_j x_v[j]``
``mul``        ``x_t ⊙ x_v``                            ``x_t ⊙ mean_j x_v[j]``
``mul_expand`` ``(Σ_k x_t[k]) · x_v``                   ``(Σ_k x_t[k]) · mean_j x_v[j]``
``vl``         ``(x_t x_v^T) x_v = <x_t, x_v> x_v``     ``x_t (x_v^T x_v)``
``vl_relu``    ``<relu(x_t), relu(x_v)> x_v``           ``relu(x_t) (relu(x_v)^T x_v)``
=============  =====================================  =============================================

``vl`` is the paper's default ``x_t (x_v)^T x_v``. We compute the r×r Gram matrix ``x_v^T x_v`` first, so the
cost is O((n + m) r²) rather than O(n m r), and we use a **true transpose**. The released code uses
``reshape`` where a transpose is meant: identical for m = 1 (all released scripts), a scrambled matrix for
m > 1 (paper-notes §A.3). In ``vl_relu`` the last factor is *not* ReLU'd, as in the released code. The
element-wise kinds are defined for one visual vector; with m > 1 we use the mean over visual tokens (the
released code crashes there). Everything here is pure tensor code: no state, no I/O.
"""

from __future__ import annotations

import torch

from vlpeft.errors import ConfigError

ROUTING_KINDS: tuple[str, ...] = ("none", "add", "mul", "mul_expand", "vl", "vl_relu")


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a routing kind; otherwise raise a ``ConfigError`` listing the valid ones."""
    if kind not in ROUTING_KINDS:
        raise ConfigError(f"routing kind {kind!r} is unknown (valid: {', '.join(ROUTING_KINDS)})")
    return kind


def _check_shapes(x_t: torch.Tensor, x_v: torch.Tensor) -> None:
    if x_t.dim() != 3 or x_v.dim() != 3:
        raise ValueError(
            f"route expects x_t (B, n, r) and x_v (B, m, r); got {tuple(x_t.shape)} and {tuple(x_v.shape)}"
        )
    if x_t.shape[0] != x_v.shape[0] or x_t.shape[2] != x_v.shape[2]:
        raise ValueError(
            f"route: batch and rank of x_t {tuple(x_t.shape)} and x_v {tuple(x_v.shape)} must agree"
        )


def route(kind: str, x_t: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
    """Route text ``x_t`` (B, n, r) with visual ``x_v`` (B, m, r) by function ``kind``; returns z (B, n, r).

    See the module docstring for the formulas. ``x_v`` is cast to ``x_t``'s dtype. ``none`` returns ``x_t``
    itself (no copy), so a ``none`` bottleneck is bit-identical to plain LoRA.
    """
    check_kind(kind)
    if kind == "none":
        return x_t
    _check_shapes(x_t, x_v)
    x_v = x_v.to(x_t.dtype)
    if kind in ("add", "mul", "mul_expand"):
        # One visual vector per sample; the mean over tokens is exact for m = 1 (no-op).
        v = x_v if x_v.shape[1] == 1 else x_v.mean(dim=1, keepdim=True)  # (B, 1, r)
        if kind == "add":
            return x_t + v
        if kind == "mul":
            return x_t * v
        # x_t x''_v with every row of x''_v equal to v: the row sum of x_t times v.
        return x_t.sum(dim=-1, keepdim=True) * v
    if kind == "vl":
        gram = x_v.transpose(1, 2) @ x_v  # (B, r, r) = x_v^T x_v
        return x_t @ gram
    # vl_relu: relu(x_t) relu(x_v)^T x_v; the last factor keeps its sign.
    gram = torch.relu(x_v).transpose(1, 2) @ x_v
    return torch.relu(x_t) @ gram
