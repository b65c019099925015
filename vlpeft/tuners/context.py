"""The current batch's visual features and task, visible to every PEFT layer without changing signatures.

Hugging Face models do not pass extra tensors down to their linear layers, so routed layers read the raw
visual features ``X_v`` (B, m, d) from a ``contextvars.ContextVar`` that the VL model sets around its
forward (and backward)::

    with visual_context(x_v):
        loss = model(**batch).loss
        loss.backward()  # inside: needed for gradient checkpointing without checkpoint_kwargs()

Batch expansion (beam search repeats every sample ``k`` times with ``repeat_interleave``) is followed by
``expand_to_batch``. Gradient checkpointing recomputes layers during backward; ``checkpoint_kwargs()``
captures the context at forward time and restores it for the recomputation, so backward may then run anywhere
(and on any autograd thread).

The batch's **task** (multi-task training: ``"vqa"``, ``"gqa"``, ``"nlvr"``, ``"caption"``) travels the same
way in a second ContextVar (``task_context(name)``), so per-task modules can pick their weights. A task is
one name for the whole batch, so beam expansion needs nothing; checkpoint recomputation restores it with the
visual features. A layer that needs a task calls ``require_task(who)``: no task set is an error, never a
silent default.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch

_VISUAL: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("vlpeft_visual", default=None)
_TASK: contextvars.ContextVar[str | None] = contextvars.ContextVar("vlpeft_task", default=None)


@contextlib.contextmanager
def visual_context(x_v: torch.Tensor | None) -> Iterator[None]:
    """Make ``x_v`` (B, m, d) — or (B, d), read as m = 1 — the visual input of routed layers inside the block.

    Contexts nest; the previous value comes back on exit. ``None`` clears the context.
    """
    if x_v is not None:
        if not isinstance(x_v, torch.Tensor):
            raise TypeError(f"visual_context expects a tensor (B, m, d), got {type(x_v).__name__}")
        if x_v.dim() == 2:
            x_v = x_v.unsqueeze(1)
        if x_v.dim() != 3:
            raise ValueError(f"visual_context expects (B, m, d) or (B, d) features, got {tuple(x_v.shape)}")
    token = _VISUAL.set(x_v)
    try:
        yield
    finally:
        _VISUAL.reset(token)


def current_visual() -> torch.Tensor | None:
    """The visual features set by the innermost ``visual_context``, or ``None``."""
    return _VISUAL.get()


@contextlib.contextmanager
def task_context(task: str | None) -> Iterator[None]:
    """Make ``task`` the current batch's task inside the block (nests; ``None`` clears it)."""
    if task is not None and (not isinstance(task, str) or not task):
        raise TypeError(f"task_context expects a task name, got {task!r}")
    token = _TASK.set(task)
    try:
        yield
    finally:
        _TASK.reset(token)


def current_task() -> str | None:
    """The task set by the innermost ``task_context``, or ``None``."""
    return _TASK.get()


def require_task(who: str) -> str:
    """The current task for a layer that needs one; ``RuntimeError`` naming ``who`` when none is set."""
    task = _TASK.get()
    if task is None:
        raise RuntimeError(
            f"{who} needs the batch's task but none is set: call the VL model with task=..., or wrap the "
            "forward in vlpeft.tuners.task_context(name); with gradient checkpointing use checkpoint_kwargs()"
        )
    return task


def expand_to_batch(x_v: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat ``x_v`` (B, ...) to ``batch = k·B`` rows (beam search: each sample ``k`` times in a row).

    Raises ``ValueError`` when ``batch`` is not a multiple of ``B``: the context belongs to another batch.
    """
    b = x_v.shape[0]
    if batch == b:
        return x_v
    if b == 0 or batch % b:
        raise ValueError(
            f"visual context has batch {b} but the layer input has batch {batch}, not a multiple of it; "
            "set visual_context(...) with this batch's visual features"
        )
    return x_v.repeat_interleave(batch // b, dim=0)


def checkpoint_context_fn() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """``context_fn`` for ``torch.utils.checkpoint``: the recomputation sees the forward's visual features
    and task."""
    visual, task = _VISUAL.get(), _TASK.get()

    @contextlib.contextmanager
    def restore() -> Iterator[None]:
        with visual_context(visual), task_context(task):
            yield

    return contextlib.nullcontext(), restore()


def checkpoint_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=...)``.

    Non-reentrant checkpointing with ``checkpoint_context_fn``, so routed layers recompute with the same
    visual features even when ``backward()`` runs outside ``visual_context``.
    """
    return {"use_reentrant": False, "context_fn": checkpoint_context_fn}
