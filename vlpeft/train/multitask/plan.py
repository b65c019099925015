"""VL-Adapter's multi-task batch plan, as a pure function of (task sizes, batch sizes, seed, epoch).

VL-Adapter's ``MultitaskLoader(sampling="roundrobin")`` lists ``[task] × len(loader_task)`` for every task,
shuffles that list per epoch and takes each task's next batch from its own shuffled sampler: every batch of
every task exactly once per epoch, tasks in proportion to their number of batches. Here the same plan is
computed up front from ``(seed, epoch)`` alone, so every DDP rank computes the identical plan and a resumed
run skips exactly the steps already taken (VL-Adapter reshuffles only under ``--distributed``; here always).

Global sample index = the task's offset (tasks in the given order) + its local index.
"""

from __future__ import annotations

import numpy as np

_ORDER_STREAM = 1_000_003  # the seed stream of the batch order (tasks use their index)


def task_offsets(sizes: dict[str, int]) -> dict[str, int]:
    """Offset of each task's samples in the global index (in the dict's order)."""
    out, start = {}, 0
    for task, n in sizes.items():
        out[task] = start
        start += n
    return out


def steps_per_epoch(sizes: dict[str, int], batch_sizes: dict[str, int]) -> int:
    """Batches per epoch: each task's ``ceil(n / batch size)`` (the last batch of a task may be smaller)."""
    return sum(-(-n // batch_sizes[t]) for t, n in sizes.items())


def epoch_plan(
    sizes: dict[str, int], batch_sizes: dict[str, int], seed: int, epoch: int
) -> list[tuple[str, list[int]]]:
    """The epoch's batches in order, each ``(task, global sample indices)`` of a single task.

    Each task's samples are permuted by ``(seed, epoch, task index)`` and cut into its batch size; the list of
    all batches is then shuffled by ``(seed, epoch)``.
    """
    offsets = task_offsets(sizes)
    batches: list[tuple[str, list[int]]] = []
    for t, (task, n) in enumerate(sizes.items()):
        if n == 0:
            continue
        perm = np.random.default_rng([seed, epoch, t]).permutation(n) + offsets[task]
        size = batch_sizes[task]
        batches.extend((task, perm[i : i + size].tolist()) for i in range(0, n, size))
    order = np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(len(batches))
    return [batches[i] for i in order]
