"""The vision encoder: a Hugging Face ViT (hub id or local path) that turns images into visual features.

Used for the feature store (run once, frozen) and by the models for encoder-in-the-loop training. Features
always come out as ``(B, m, d)``: ``pooled`` gives ``m = 1``, ``tokens`` gives every output token (CLS first).
Pooling:
- ``cls``: the CLS token after the encoder's final LayerNorm (``last_hidden_state[:, 0]``);
- ``pooler``: the checkpoint's own pooler (dense + tanh) — refused unless the checkpoint has trained pooler
  weights, because transformers silently initialises a missing pooler at random;
- ``mean``: the mean of the patch tokens of ``last_hidden_state`` (CLS excluded, as timm's ``avg`` pool).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

from vlpeft.errors import ConfigError, DataError

Pooling = Literal["cls", "pooler", "mean"]
FeatureKind = Literal["pooled", "tokens"]
POOLINGS: tuple[str, ...] = ("cls", "pooler", "mean")


class VisionEncoder(nn.Module):
    """A ViT-style image encoder plus its image processor, with a fixed pooling rule."""

    def __init__(self, model: nn.Module, processor: Any, pooling: Pooling = "cls", name: str = "") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"vision pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise ConfigError(
                f"vision encoder {name or type(model).__name__}: pooling 'pooler' but it has no pooler"
            )
        self.model = model
        self.processor = processor
        self.pooling = pooling
        self.name = name

    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: Pooling = "cls", **kwargs: Any) -> VisionEncoder:
        """Load model + image processor from a hub id or a local ``save_pretrained`` directory.

        ViT checkpoints are loaded without a pooler unless ``pooling="pooler"``; then the pooler must come
        from the checkpoint (a randomly initialised one is a ``ConfigError``).
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTModel

        from vlpeft.models.backbones import IMPORTED_FEATURE_WIDTHS

        if pooling not in POOLINGS:
            raise ConfigError(f"vision pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        if name_or_path in IMPORTED_FEATURE_WIDTHS:
            raise ConfigError(
                f"model.vision {name_or_path!r}: its features are imported (`vlpeft features-import`); no "
                "encoder runs it here, so a model of it reads a feature store and cannot take raw images"
            )
        try:
            config = AutoConfig.from_pretrained(name_or_path)
            processor = AutoImageProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"vision encoder {name_or_path}: cannot load ({first})") from None
        if config.model_type == "vit":
            model, info = ViTModel.from_pretrained(
                name_or_path, add_pooling_layer=pooling == "pooler", output_loading_info=True, **kwargs
            )
        elif config.model_type in ("clip", "clip_vision_model"):
            from transformers import CLIPVisionModel

            # A full CLIP checkpoint (e.g. openai/clip-vit-base-patch32) gives its vision tower only.
            model, info = CLIPVisionModel.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
        else:
            model, info = AutoModel.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
        if pooling == "pooler" and any(k.startswith("pooler") for k in info.get("missing_keys", ())):
            raise ConfigError(
                f"vision encoder {name_or_path}: pooling 'pooler' but the checkpoint has no trained pooler "
                "(use features.pooling=cls)"
            )
        return cls(model.eval(), processor, pooling, str(name_or_path))

    @property
    def width(self) -> int:
        """Feature width ``d`` (the encoder's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def image_size(self) -> int:
        """Input resolution the encoder expects."""
        size = self.model.config.image_size
        return int(size[0] if isinstance(size, list | tuple) else size)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> ``pixel_values`` (B, 3, H, W) float32 (CPU) by the checkpoint's image processor."""
        rgb = [img.convert("RGB") for img in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]

    def forward(self, pixel_values: torch.Tensor, kind: FeatureKind = "pooled") -> torch.Tensor:
        """Visual features ``(B, m, d)``: ``pooled`` (m = 1, by ``self.pooling``) or all ``tokens``."""
        param = next(self.model.parameters())
        out = self.model(pixel_values=pixel_values.to(device=param.device, dtype=param.dtype))
        hidden = out.last_hidden_state
        if kind == "tokens":
            return hidden
        if kind != "pooled":
            raise ConfigError(f"visual feature kind {kind!r}: expected 'pooled' or 'tokens'")
        if self.pooling == "cls":
            return hidden[:, :1]
        if self.pooling == "mean":
            return hidden[:, 1:].mean(dim=1, keepdim=True)
        return out.pooler_output.unsqueeze(1)

    @property
    def grid(self) -> int:
        """Side of the patch grid (e.g. 7 for ViT-B/32 at 224 px)."""
        patch = self.model.config.patch_size
        patch = patch[0] if isinstance(patch, list | tuple) else patch
        return self.image_size // int(patch)

    def num_tokens(self, kind: FeatureKind) -> int:
        """``m`` for a feature kind: 1 for pooled, CLS + patches for tokens."""
        if kind == "pooled":
            return 1
        patch = self.model.config.patch_size
        patch = patch[0] if isinstance(patch, list | tuple) else patch
        return 1 + (self.image_size // int(patch)) ** 2

    def preprocessing_config(self) -> dict[str, Any]:
        """The image processor's settings (JSON-safe), for provenance."""
        to_dict = getattr(self.processor, "to_dict", None)
        return {k: v for k, v in (to_dict() if to_dict else {}).items() if not k.startswith("_")}

    def weights_hash(self) -> str:
        """SHA-256 over every parameter and buffer (sorted names, dtype, shape, bytes)."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def pool_grid(tokens: torch.Tensor, size: tuple[int, int] = (6, 6)) -> torch.Tensor:
    """Patch tokens (B, 1 + g·g, d), CLS first, -> (B, size[0]·size[1], d) by 2-D adaptive max-pooling of the
    g×g grid (CLS dropped): VL-Adapter's ``--n_boxes 36 --downsample`` on CLIP's 7×7 grid."""
    b, n, d = tokens.shape
    g = round((n - 1) ** 0.5)
    if g * g != n - 1:
        raise ValueError(f"{n} tokens are not CLS + a square patch grid")
    grid = tokens[:, 1:].transpose(1, 2).reshape(b, d, g, g)
    pooled = torch.nn.functional.adaptive_max_pool2d(grid, size)
    return pooled.flatten(2).transpose(1, 2)
