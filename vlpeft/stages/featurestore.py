"""The ``features`` stage: the frozen vision encoder run once over every image into the feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlpeft.config import Params
from vlpeft.io import check_writable
from vlpeft.stages.common import _tracked, localize_backbones, log_results
from vlpeft.stages.declare import StageDecl
from vlpeft.tracking.base import Tracker

# dvc.yaml passes the encoder (--encoder models/vit): model.vision is then not read; model.image_size is.
STAGE = StageDecl(
    name="features",
    module=__name__,
    cli="vlpeft.cli.pretrain",
    reads=("features", "model.image_size"),
    functions=("features",),
)


def load_encoder(params: Params, encoder: str | None = None, models: str | Path | None = None) -> Any:
    """The frozen vision encoder of the features stage (``encoder`` or ``model.vision``), GPU if any."""
    import torch

    from vlpeft.models.vision import VisionEncoder

    name = encoder or localize_backbones(params, models).model.vision
    enc = VisionEncoder.from_pretrained(
        name, pooling=params.features.pooling, image_size=params.model.image_size
    )
    return enc.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def features(
    params: Params,
    *,
    data: str | Path,
    out: str | Path,
    encoder: str | None = None,
    models: str | Path | None = None,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """The ``features`` stage: the frozen vision encoder once over every image -> the feature store ``out``.

    Returns the store's index (without per-image rows).
    """
    check_writable(out)
    from vlpeft.data.features import extract_features
    from vlpeft.data.images import image_table

    fc = params.features
    enc = load_encoder(params, encoder, models)
    with _tracked(params, "features", tracker) as t:
        meta = extract_features(
            enc,
            image_table(data),
            out,
            kind=fc.kind,
            dtype=fc.dtype,
            batch_size=fc.batch_size,
            shard_size=fc.shard_size,
            extra_provenance={"data_root": str(data)},
            grid_pool=tuple(fc.grid_pool) if fc.grid_pool else None,
        )
        log_results(t, {"images": meta["n_images"], "width": meta["width"]}, Path(out) / "index.json")
    return meta
