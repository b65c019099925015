"""Visual inputs of a batch: frozen features from the feature store, or pixels for the encoder in the loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from vlpeft.errors import ConfigError, DataError


class VisualSource:
    """Turn image ids (+ paths) into the model's visual batch keys.

    ``mode="features"`` reads ``visual`` (B, m, d) from a ``FeatureStore``; ``mode="images"`` loads the image
    files and gives ``pixel_values`` (the model runs its vision encoder). The blind model gets nothing.
    """

    def __init__(self, model: Any, mode: str, store: Any | None = None, kind: str = "pooled") -> None:
        self.model = model
        self.mode = mode
        self.store = store
        self.kind = kind
        self.enabled = bool(model.uses_visual)
        if not self.enabled:
            return
        if mode == "features":
            if store is None:
                raise ConfigError("visual_input: features needs a feature store (--features DIR)")
            store.require(kind=kind, width=model.visual_width)
            check_store_encoder(store, model)
        elif mode == "images":
            model.attach_vision()
        else:
            raise ConfigError(f"visual_input: {mode!r} is not one of features, images")

    def __call__(self, image_ids: Sequence[int], paths: Sequence[Path]) -> dict[str, torch.Tensor]:
        if not self.enabled:
            return {}
        if self.mode == "features":
            return {"visual": self.store.get(list(image_ids), self.kind)}
        from vlpeft.data.images import load_image

        return {"pixel_values": self.model.vision.preprocess([load_image(p) for p in paths])}

    def check(self, image_ids: Sequence[int], paths: Sequence[Path]) -> None:
        """``DataError`` now, before training, for an input ``__call__`` would fail on later: the feature
        store's shards and these ids, or these image files."""
        if not self.enabled:
            return
        if self.mode == "features":
            self.store.verify(image_ids)
            return
        from vlpeft.errors import DataError

        for p in paths:
            if not Path(p).is_file():
                raise DataError(f"{p}: image file not found")


def check_store_encoder(store: Any, model: Any) -> None:
    """Refuse features made by another encoder or pooling than the model's: at predict time the model runs
    its own encoder on raw images, so stale features would train a model that predicts differently."""
    from vlpeft.data.vladapter_features import SOURCE as IMPORTED
    from vlpeft.models.backbones import IMPORTED_FEATURE_WIDTHS, quiet_transformers
    from vlpeft.models.vision import VisionEncoder

    vision = model.model_cfg.vision
    imported = store.provenance.get("source") == IMPORTED
    if vision in IMPORTED_FEATURE_WIDTHS or imported:
        # Imported features (no encoder here to hash): the store must name model.vision as its encoder.
        encoder = store.provenance.get("encoder")
        if not imported or encoder != vision:
            made = f"imported features of encoder {encoder!r}" if imported else "features of a local encoder"
            raise DataError(
                f"{store.dir}: {made}, but model.vision is {vision!r} (imported features need model.vision "
                f"= the store's encoder, one of {', '.join(IMPORTED_FEATURE_WIDTHS)}; "
                "`vlpeft features-import --encoder`)"
            )
        return
    pooling = store.provenance.get("pooling")
    if pooling is not None and pooling != model.vision_pooling:
        raise DataError(
            f"{store.dir}: features were pooled with {pooling!r}, but features.pooling is "
            f"{model.vision_pooling!r} (re-run `vlpeft features`)"
        )
    with quiet_transformers():
        encoder = VisionEncoder.from_pretrained(
            model.model_cfg.vision, pooling=model.vision_pooling, image_size=model.model_cfg.image_size
        )
    store.require(weights_sha256=encoder.weights_hash())


def chunks(n: int, size: int) -> Iterator[list[int]]:
    """``range(n)`` in consecutive index lists of at most ``size``."""
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device
