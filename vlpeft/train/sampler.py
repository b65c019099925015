"""Deterministic data order: which samples each optimizer step, rank and micro-step sees.

The order of an epoch is a permutation derived from ``(seed, epoch)`` alone, so a resumed run can skip
exactly the batches already consumed, and every rank of a DDP run computes the same global order and takes
its own slice of each global batch (the DistributedSampler idea, but sliced per step so that N processes
and 1 process see the same global batches).
"""

from __future__ import annotations

import math

import torch


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a permutation of ``range(n)`` fixed by ``seed`` and ``epoch``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last global batch may be smaller; nothing is dropped)."""
    return math.ceil(n / batch_size)


def global_batch(order: list[int], step: int, batch_size: int) -> list[int]:
    """Sample indices of optimizer step ``step`` (0-based within the epoch)."""
    return order[step * batch_size : (step + 1) * batch_size]


def split_even(indices: list[int], parts: int) -> list[list[int]]:
    """Split into ``parts`` contiguous chunks whose sizes differ by at most one (some may be empty)."""
    base, extra = divmod(len(indices), parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(indices[start : start + size])
        start += size
    return out


def rank_micro_batches(batch: list[int], world_size: int, rank: int, grad_accum: int) -> list[list[int]]:
    """This rank's ``grad_accum`` micro-batches of one global batch (contiguous slices; some may be empty)."""
    chunks = split_even(batch, world_size * grad_accum)
    return chunks[rank * grad_accum : (rank + 1) * grad_accum]


def subset_indices(n: int, k: int | None, seed: int) -> list[int]:
    """A seeded subset of ``k`` of ``n`` sample indices, ascending (all of them when ``k`` is None)."""
    if k is None or k >= n:
        return list(range(n))
    gen = torch.Generator().manual_seed(seed + 7919)
    return sorted(torch.randperm(n, generator=gen)[:k].tolist())
