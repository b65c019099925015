"""The vision encoder: a Hugging Face image encoder (hub id or local path) that turns images into features.

Used for the feature store (run once, frozen) and by the models for encoder-in-the-loop training. Features
always come out as ``(B, m, d)``: ``pooled`` gives ``m = 1``, ``tokens`` gives every output token (CLS first).
Families and their traits (CLS token or not, pooler, resolution) come from ``vlpeft.families``. Pooling:
- ``cls``: the CLS token of ``last_hidden_state`` (after the final LayerNorm for ViT, DeiT, DINOv2);
  refused for encoders without one (SigLIP, a CNN such as ConvNeXt);
- ``pooler``: the checkpoint's own pooler — a pooler layer (ViT's dense + tanh) is refused unless the
  checkpoint has trained pooler weights (transformers silently initialises a missing one at random); CLIP's
  post-LayerNorm CLS, SigLIP's attention-pooling head and ConvNeXt's final LayerNorm are ``pooler_output``;
  DINOv2 has none (its ``pooler_output`` is the CLS token: the error suggests ``cls``);
- ``mean``: the mean of the patch tokens of ``last_hidden_state`` (CLS/distillation tokens excluded, as
  timm's ``avg`` pool), or of a CNN's feature map.

Resolution: images come at the size the checkpoint's image processor makes. When it differs from the size
the position embeddings were trained at (``config.image_size``), they are interpolated
(``interpolate_pos_encoding``; DINOv2 and CNNs take any size); a family that cannot is one clear line.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

from vlpeft.errors import ConfigError, DataError
from vlpeft.families import FAMILIES, Family, check_tower, family_of

# A vision family outside the table is treated as ViT-like (CLS first, a pooler layer if any).
DEFAULT_VISION = Family(frozenset({"vision"}), (), {})

Pooling = Literal["cls", "pooler", "mean"]
FeatureKind = Literal["pooled", "tokens"]
POOLINGS: tuple[str, ...] = ("cls", "pooler", "mean")


def _pooling_error(name: str, model_type: str, pooling: str, fam: Family) -> str | None:
    """Why ``pooling`` cannot work for this family (``None`` when it can); the line suggests what can."""
    if pooling == "cls" and fam.prefix_tokens < 1:
        return (
            f"pooling 'cls' but a {model_type!r} encoder has no CLS token; use features.pooling: pooler/mean"
        )
    if pooling == "pooler" and fam.pooler == "none":
        return (
            f"pooling 'pooler' but a {model_type!r} encoder has no pooler; use features.pooling: cls (its "
            "CLS token after the final LayerNorm) or mean"
        )
    return None


class VisionEncoder(nn.Module):
    """An image encoder of any family in ``vlpeft.families`` (ViT-style or CNN) plus its image processor,
    with a fixed pooling rule; the input resolution is the processor's (position embeddings interpolated)."""

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        pooling: Pooling = "cls",
        name: str = "",
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"vision pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        model_type = str(getattr(model.config, "model_type", ""))
        self.family = family_of(model_type) or DEFAULT_VISION
        label = name or type(model).__name__
        why = _pooling_error(label, model_type, pooling, self.family)
        pooler = why is None and pooling == "pooler"
        if pooler and self.family.pooler == "module" and getattr(model, "pooler", None) is None:
            why = "pooling 'pooler' but it has no pooler; use features.pooling: cls"
        if pooler and getattr(model.config, "vision_use_head", None) is False:
            why = "pooling 'pooler' but this SigLIP has no attention-pooling head; use features.pooling: mean"
        if why:
            raise ConfigError(f"vision encoder {label}: {why}")
        self.model = model
        self.processor = processor if image_size is None else resized_processor(processor, image_size)
        self.pooling = pooling
        self.name = name
        self._input_size: tuple[int, int] | None = None
        if image_size is not None and self.input_size != (image_size, image_size):
            raise ConfigError(
                f"model.image_size {image_size}: the image processor of {label} makes "
                f"{self.input_size[0]}x{self.input_size[1]} images even when asked for {image_size} px; set "
                "its size in preprocessor_config.json instead"
            )

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, pooling: Pooling = "cls", image_size: int | None = None, **kwargs: Any
    ) -> VisionEncoder:
        """Load model + image processor from a hub id or a local ``save_pretrained`` directory.

        The table's ``vision_class`` gives the vision tower of a dual checkpoint (CLIP, SigLIP); a family
        whose pooler is a separate layer (ViT) loads it only for ``pooling="pooler"``, and then it must come
        from the checkpoint (a randomly initialised one is a ``ConfigError``). ``image_size``
        (``model.image_size``) overrides the processor's output size.
        """
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

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
            model_type = str(config.model_type)
            check_tower(model_type, "vision", f"model.vision: {name_or_path!r}")
            processor = AutoImageProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"vision encoder {name_or_path}: cannot load ({first})") from None
        fam = family_of(model_type) or DEFAULT_VISION
        why = _pooling_error(str(name_or_path), model_type, pooling, fam)
        if why:  # before loading any weights
            raise ConfigError(f"vision encoder {name_or_path}: {why}")
        load = getattr(transformers, fam.vision_class) if fam.vision_class else AutoModel
        if fam.pooler == "module" and model_type in FAMILIES:
            kwargs = {"add_pooling_layer": pooling == "pooler", **kwargs}
        try:
            model, info = load.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"vision encoder {name_or_path}: cannot load ({first})") from None
        missing = sorted(info.get("missing_keys", ()))
        if pooling == "pooler" and any(k.startswith("pooler") or ".head." in f".{k}" for k in missing):
            raise ConfigError(
                f"vision encoder {name_or_path}: pooling 'pooler' but the checkpoint has no trained pooler "
                "(use features.pooling=cls)"
            )
        if missing:  # transformers would initialise them at random, silently
            raise DataError(
                f"vision encoder {name_or_path}: the checkpoint lacks {len(missing)} weights of a "
                f"{model_type!r} model (e.g. {missing[0]}); they would be random"
            )
        return cls(model.eval(), processor, pooling, str(name_or_path), image_size)

    @property
    def width(self) -> int:
        """Feature width ``d`` (the encoder's hidden size; a CNN's last-stage width)."""
        from vlpeft.models.backbones import width_of

        return width_of(self.model.config)

    @property
    def native_size(self) -> tuple[int, int]:
        """(height, width) the checkpoint's position embeddings were trained at (``config.image_size``)."""
        size = getattr(self.model.config, "image_size", None) or self.input_size[0]
        return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) else (int(size), int(size))

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the images the processor makes: the resolution the encoder runs at."""
        if self._input_size is None:
            probe = self.processor(images=[Image.new("RGB", (37, 23))], return_tensors="pt")["pixel_values"]
            self._input_size = (int(probe.shape[-2]), int(probe.shape[-1]))
        return self._input_size

    @property
    def image_size(self) -> int:
        """Input resolution the encoder runs at (the processor's; the height for a non-square one)."""
        return self.input_size[0]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> ``pixel_values`` (B, 3, H, W) float32 (CPU) by the checkpoint's image processor."""
        rgb = [img.convert("RGB") for img in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]

    def _resolution_kwargs(self, pixel_values: torch.Tensor) -> dict[str, Any]:
        """``interpolate_pos_encoding=True`` when the input is not at the native resolution (the family must
        support it); a family that cannot is one clear line."""
        size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        if size == self.native_size or self.family.any_resolution:
            return {}
        if "interpolate_pos_encoding" in inspect.signature(type(self.model).forward).parameters:
            return {"interpolate_pos_encoding": True}
        raise ConfigError(
            f"vision encoder {self.name or type(self.model).__name__}: images of {size[0]}x{size[1]} but its "
            f"position embeddings are for {self.native_size[0]}x{self.native_size[1]}, and a "
            f"{self.model.config.model_type!r} model cannot interpolate them; set the image processor's size "
            "(preprocessor_config.json) to the model's image_size"
        )

    def forward(self, pixel_values: torch.Tensor, kind: FeatureKind = "pooled") -> torch.Tensor:
        """Visual features ``(B, m, d)``: ``pooled`` (m = 1, by ``self.pooling``) or all ``tokens``."""
        if kind not in ("pooled", "tokens"):
            raise ConfigError(f"visual feature kind {kind!r}: expected 'pooled' or 'tokens'")
        if kind == "tokens" and not self.family.token_grid:
            raise ConfigError(
                f"vision encoder {self.name}: a {self.model.config.model_type!r} model gives a feature map, "
                "not tokens; use pooled features (features.kind: pooled, model.visual_features: pooled)"
            )
        param = next(self.model.parameters())
        pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
        out = self.model(pixel_values=pixel_values, **self._resolution_kwargs(pixel_values))
        hidden = out.last_hidden_state
        if kind == "tokens":
            return hidden
        if self.pooling == "pooler":
            return out.pooler_output.unsqueeze(1)
        if self.pooling == "cls":
            return hidden[:, :1]
        if not self.family.token_grid:  # (B, C, H, W) feature map: mean over positions
            return hidden.flatten(2).mean(dim=2).unsqueeze(1)
        return hidden[:, self.family.prefix_tokens :].mean(dim=1, keepdim=True)

    @property
    def grid(self) -> int:
        """Side of the patch grid at the input resolution (e.g. 7 for ViT-B/32 at 224 px)."""
        patch = self.model.config.patch_size
        patch = patch[0] if isinstance(patch, list | tuple) else patch
        return self.image_size // int(patch)

    def num_tokens(self, kind: FeatureKind) -> int:
        """``m`` for a feature kind: 1 for pooled, the prefix tokens (CLS ...) + patches for tokens."""
        if kind == "pooled":
            return 1
        return self.family.prefix_tokens + self.grid**2

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


def resized_processor(processor: Any, side: int) -> Any:
    """A copy of ``processor`` making ``side``×``side`` images: its resize target (``height``/``width`` or
    ``shortest_edge``) and its centre crop (when it has one) set to ``side``."""
    import copy

    out = copy.deepcopy(processor)
    edge = "shortest_edge" in dict(getattr(out, "size", None) or {})
    size = {"shortest_edge": side} if edge else {"height": side, "width": side}
    out.size = type(out.size)(**size) if hasattr(type(out.size), "__dataclass_fields__") else size
    if getattr(out, "crop_size", None) is not None:
        crop = {"height": side, "width": side}
        out.crop_size = (
            type(out.crop_size)(**crop) if hasattr(type(out.crop_size), "__dataclass_fields__") else crop
        )
    return out


def pool_grid(tokens: torch.Tensor, size: tuple[int, int] = (6, 6), prefix: int = 1) -> torch.Tensor:
    """Patch tokens (B, prefix + g·g, d), the ``prefix`` tokens first (ViT/CLIP: CLS = 1, DeiT: CLS +
    distillation = 2, SigLIP: 0), -> (B, size[0]·size[1], d) by 2-D adaptive max-pooling of the g×g grid
    (prefix dropped): VL-Adapter's ``--n_boxes 36 --downsample`` on CLIP's 7×7 grid."""
    b, n, d = tokens.shape
    g = round(max(n - prefix, 0) ** 0.5)
    if g == 0 or g * g != n - prefix:
        raise ConfigError(
            f"features.grid_pool: {n} tokens are not {prefix} prefix token(s) + a square patch grid"
        )
    grid = tokens[:, prefix:].transpose(1, 2).reshape(b, d, g, g)
    pooled = torch.nn.functional.adaptive_max_pool2d(grid, size)
    return pooled.flatten(2).transpose(1, 2)
