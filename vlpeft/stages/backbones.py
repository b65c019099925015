"""The ``pretrain`` stage: tokenizer and tiny ViT / RoBERTa / GPT-2 (/ BART) of the embedded world."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlpeft.config import Params
from vlpeft.io import check_writable
from vlpeft.stages.common import _tracked, log_results
from vlpeft.stages.declare import StageDecl
from vlpeft.tracking.base import Tracker

STAGE = StageDecl(
    name="pretrain",
    module=__name__,
    cli="vlpeft.cli.pretrain",
    reads=("seed", "pretrain"),
    functions=("pretrain",),
)


def pretrain(
    params: Params,
    *,
    data: str | Path,
    out: str | Path,
    metrics: str | Path | None = None,
    headline: str | Path | None = None,
    parts: Sequence[str] | None = None,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``pretrain`` stage: tokenizer + tiny ViT / RoBERTa / GPT-2 of the embedded world under ``out``.

    ``metrics`` gets every figure of every part; ``headline`` the flat health figures (``health_metrics``:
    the DVC metrics file locally, the KFP UI's metrics on Kubeflow). A failed run leaves no stale headline.
    """
    check_writable(out, metrics, headline)
    from vlpeft.io import write_json
    from vlpeft.pretrain import PARTS, pretrain_backbones
    from vlpeft.pretrain.run import health_metrics

    if headline is not None:
        Path(headline).unlink(missing_ok=True)
    with _tracked(params, "pretrain", tracker) as t:
        result = pretrain_backbones(params, data, out, metrics, parts=parts or PARTS)
        if headline is not None:
            write_json(headline, health_metrics(result))
        log_results(t, result, *((Path(metrics),) if metrics else ()))
    return result
