"""The batches of each optimizer step, collated ahead of time by a background thread when asked.

One producer thread (never several: tokenizers and feature-store caches are then never used concurrently)
collates the next steps' micro-batches while the main thread computes; results come in step order, so the
run is bitwise the same with or without prefetching.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

from vlpeft.train import sampler

T = TypeVar("T")
Prepared = list[tuple[dict[str, Any], float]]  # one step: (collated micro-batch, its loss units)


def prepare_step(data: Any, batch_idx: list[int], world_size: int, rank: int, grad_accum: int) -> Prepared:
    """This rank's collated micro-batches of one global batch, each with its loss units.

    Under DDP every rank must run the same number of backward passes, so an empty share becomes one real
    sample with weight 0 (its gradient is exactly zero); in one process empty shares are skipped.
    """
    out: Prepared = []
    for idx in sampler.rank_micro_batches(batch_idx, world_size, rank, grad_accum):
        if idx:
            b = data.batch(idx)
            out.append((b, float(data.units(b))))
        elif world_size > 1:
            out.append((data.batch(batch_idx[:1]), 0.0))
    return out


def epoch_steps(
    data: Any,
    order: list[int],
    batch_size: int,
    start: int,
    steps: int,
    world_size: int,
    rank: int,
    accum: int,
) -> Iterator[tuple[int, list[int], Prepared]]:
    """(step index in the epoch, global batch indices, this rank's prepared micro-batches) from ``start``."""
    for b in range(start, steps):
        batch_idx = sampler.global_batch(order, b, batch_size)
        yield b, batch_idx, prepare_step(data, batch_idx, world_size, rank, accum)


def planned_steps(
    data: Any, batches: list[list[int]], start: int, world_size: int, rank: int, accum: int
) -> Iterator[tuple[int, list[int], Prepared]]:
    """Like ``epoch_steps``, for a data set that plans its own batches (``epoch_plan``, multi-task)."""
    for b in range(start, len(batches)):
        yield b, batches[b], prepare_step(data, batches[b], world_size, rank, accum)


class Prefetcher:
    """Iterate ``items`` with up to ``depth`` of them produced ahead by one background thread.

    ``depth == 0`` is plain iteration. Exceptions raised while producing come out of ``__next__`` in order.
    Call :meth:`close` (or use ``with``) so the thread stops when the consumer leaves early.
    """

    _END = object()

    def __init__(self, items: Iterator[T], depth: int) -> None:
        self._items = items
        self._depth = depth
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._work, name="vlpeft-prefetch", daemon=True)
            self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self._items:
                if not self._put((True, item)):
                    return
            self._put((True, self._END))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((False, exc))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            return next(self._items)
        ok, item = self._queue.get()
        if not ok:
            raise item
        if item is self._END:
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
