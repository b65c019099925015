"""route() against closed forms (m = 1) and naive per-token formulas (m > 1), in float64."""

from __future__ import annotations

import pytest
import torch

from vlpeft.errors import ConfigError
from vlpeft.routing import ROUTING_KINDS, route

B, N, R = 3, 5, 4


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _naive(kind: str, x_t: torch.Tensor, x_v: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-token loops written straight from the paper's formulas (true transpose)."""
    z = torch.zeros_like(x_t)
    for b in range(x_t.shape[0]):
        v_mean = x_v[b].mean(0)
        for i in range(x_t.shape[1]):
            t = x_t[b, i]
            if kind == "none":
                z[b, i] = t
            elif kind == "add":
                z[b, i] = t + v_mean
            elif kind == "mul":
                z[b, i] = t * v_mean
            elif kind == "mul_expand":
                z[b, i] = t.sum() * v_mean
            elif kind == "vl":  # x_t x_v^T x_v = sum_j <x_t, x_v,j> x_v,j
                z[b, i] = sum(torch.dot(t, v) * v for v in x_v[b])
            elif kind == "vl_relu":  # relu(x_t) relu(x_v)^T x_v: last factor not relu'd
                z[b, i] = sum(torch.dot(t.clamp_min(0), v.clamp_min(0)) * v for v in x_v[b])
    return z


def test_kinds_match_config_literal():
    from vlpeft.config import ROUTING_KINDS as CONFIG_KINDS

    assert ROUTING_KINDS == CONFIG_KINDS


def test_closed_forms_for_one_visual_vector():
    x_t, x_v = _rand(B, N, R, seed=0), _rand(B, 1, R, seed=1)
    v = x_v[:, 0]  # (B, r)
    dot = torch.einsum("bnr,br->bn", x_t, v)
    dot_relu = torch.einsum("bnr,br->bn", x_t.relu(), v.relu())
    expected = {
        "none": x_t,
        "add": x_t + v[:, None],
        "mul": x_t * v[:, None],
        "mul_expand": x_t.sum(-1, keepdim=True) * v[:, None],  # the paper's x_t x''_v
        "vl": dot[..., None] * v[:, None],  # <x_t, x_v> x_v
        "vl_relu": dot_relu[..., None] * v[:, None],  # <relu(x_t), relu(x_v)> x_v
    }
    for kind, want in expected.items():
        torch.testing.assert_close(route(kind, x_t, x_v), want, rtol=1e-12, atol=1e-12, msg=kind)


@pytest.mark.parametrize("kind", ROUTING_KINDS)
@pytest.mark.parametrize("m", [1, 2, 7])
def test_matches_naive_formulas(kind, m):
    x_t, x_v = _rand(B, N, R, seed=2), _rand(B, m, R, seed=3)
    torch.testing.assert_close(route(kind, x_t, x_v), _naive(kind, x_t, x_v), rtol=1e-12, atol=1e-12)


def test_true_transpose_equals_released_reshape_only_for_m1():
    """The released code uses reshape(x_v, (B, r, m)) as x_v^T: the same for m = 1, scrambled for m > 1."""
    x_t = _rand(B, N, R, seed=4)
    for m, same in [(1, True), (6, False)]:
        x_v = _rand(B, m, R, seed=5)
        released = x_t @ x_v.reshape(B, R, m) @ x_v
        assert torch.allclose(route("vl", x_t, x_v), released) is same


def test_none_returns_input_and_shapes_are_kept():
    x_t = _rand(B, N, R, seed=6)
    assert route("none", x_t, _rand(B, 1, R, seed=7)) is x_t
    for kind in ROUTING_KINDS:
        assert route(kind, x_t, _rand(B, 3, R, seed=8)).shape == (B, N, R)


def test_gradients_reach_text_and_visual():
    x_t = _rand(B, N, R, seed=9).requires_grad_()
    x_v = _rand(B, 2, R, seed=10).requires_grad_()
    for kind in ("add", "mul", "mul_expand", "vl", "vl_relu"):
        x_t.grad = x_v.grad = None
        route(kind, x_t, x_v).sum().backward()
        assert x_t.grad is not None and x_v.grad is not None and x_v.grad.abs().sum() > 0, kind


def test_visual_dtype_follows_text():
    x_t = torch.randn(2, 3, 4, dtype=torch.float32)
    assert route("vl", x_t, torch.randn(2, 1, 4, dtype=torch.float64)).dtype == torch.float32


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(
        ConfigError, match=r"'gate' is unknown \(valid: none, add, mul, mul_expand, vl, vl_relu\)"
    ):
        route("gate", torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="must agree"):
        route("vl", torch.zeros(2, 3, 4), torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match=r"x_t \(B, n, r\)"):
        route("mul", torch.zeros(3, 4), torch.zeros(3, 1, 4))
