"""A small real torch model + data set for the engine tests, and a script entry for subprocess/torchrun runs.

Run as a script: ``python toy_trainer.py OUT [--resume] [--kill-at STEP] [--batch-size N] [--accum K]
[--dropout P]``; under ``torchrun`` it joins the process group from the environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlpeft.config import TrainConfig
from vlpeft.train.distributed import init_distributed
from vlpeft.train.loop import fit
from vlpeft.train.state import seed_everything


@dataclass
class Out:
    loss: torch.Tensor
    logits: torch.Tensor


class ToyModel(nn.Module):
    """A frozen embedding, a trainable MLP with LayerNorm and dropout: enough to exercise every loop path."""

    def __init__(self, d_in: int = 8, hidden: int = 16, n_cls: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.frozen = nn.Linear(d_in, d_in)
        self.frozen.requires_grad_(False)
        self.body = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_cls),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Out:
        logits = self.body(self.frozen(x))
        return Out(nn.functional.cross_entropy(logits, y), logits)


class ToyData:
    """A fixed, seeded classification problem (labels depend on the inputs, so the model learns)."""

    def __init__(self, n: int = 50, d_in: int = 8, seed: int = 123, nan_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d_in, generator=g)
        w = torch.randn(d_in, 3, generator=g)
        self.y = (self.x @ w).argmax(1)
        if nan_at is not None:
            self.x[nan_at] = float("nan")

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return {"x": self.x[indices], "y": self.y[indices]}

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["y"])


def make_validate(seed: int = 999):
    val = ToyData(n=40, seed=seed)

    def validate(model: nn.Module) -> dict[str, float]:
        out = model(**val.batch(list(range(len(val)))))
        acc = (out.logits.argmax(1) == val.y).float().mean().item()
        return {"val_loss": out.loss.item(), "val_metric": acc}

    return validate


def config(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=8, lr=1e-2, warmup_ratio=0.1, weight_decay=0.01, grad_clip=1.0, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def build_model(dropout: float = 0.1, seed: int = 5) -> ToyModel:
    seed_everything(seed)
    return ToyModel(dropout=dropout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-at", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--checkpoint-every", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ctx = init_distributed()
    model = build_model(args.dropout)
    cfg = config(batch_size=args.batch_size, grad_accum=args.accum, checkpoint_every=args.checkpoint_every)

    def on_step(step: int) -> None:
        if args.kill_at is not None and step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no cleanup, no atexit, no flush

    fit(
        model,
        ToyData(),
        cfg,
        Path(args.out),
        validate=make_validate(),
        resume=args.resume,
        ctx=ctx,
        on_step=on_step,
        progress=False,
    )
    if ctx.enabled:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
