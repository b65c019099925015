"""What every VL model shares: visual input (features or pixels), optional projection, routing context.

A VL model wraps one Hugging Face language backbone (possibly PEFT-injected by ``vlpeft.tuners.apply_peft``)
and, when images come in as pixels, a ``VisionEncoder``. Visual features ``X_v`` (B, m, d_v) go to the
language model twice, as in the routing paper: as visual prefix token(s) in the input sequence (switch
``model.visual_prefix``) and as the routing input of routed LoRA / adapter layers, which read them from
``vlpeft.tuners.visual_context`` set around every language-model forward and ``generate``.

With ``projection: linear`` a trainable ``Linear(d_v, d)`` maps visual features to the LM width first (both
the prefix and the routing input then see the projected features); with ``projection: none`` the widths
must match (the paper's setting) and a mismatch is a ``ConfigError`` naming both widths.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlpeft.config import ModelConfig, PeftConfig
from vlpeft.errors import ConfigError


@dataclass
class VLOutput:
    """What ``model(**batch)`` returns: ``loss`` (None without targets/labels) and ``logits``."""

    loss: torch.Tensor | None
    logits: torch.Tensor


def check_widths(model_cfg: ModelConfig, vision_width: int, lm_width: int, lm_path: str) -> None:
    """Refuse a vision/LM width mismatch without a projection, naming both widths and both checkpoints."""
    if model_cfg.projection == "none" and vision_width != lm_width:
        raise ConfigError(
            f"model.projection: none needs equal widths, but the vision encoder {model_cfg.vision!r} has "
            f"width {vision_width} and the language model {lm_path!r} has width {lm_width}; "
            "set model.projection: linear or use width-matched backbones"
        )


def _linear_projection(visual_width: int, width: int) -> nn.Module:
    projection = nn.Linear(visual_width, width)
    nn.init.normal_(projection.weight, std=0.02)
    nn.init.zeros_(projection.bias)
    return projection


def _vl_t5_projection(visual_width: int, width: int) -> nn.Module:
    from vlpeft.models.visual_embedding import VlT5VisualEmbedding

    return VlT5VisualEmbedding(visual_width, width)


# model.projection -> builder(visual width, LM width); every projection is trainable and has ``.weight``.
PROJECTIONS: dict[str, Any] = {"linear": _linear_projection, "vl_t5": _vl_t5_projection}


class VLModel(nn.Module):
    """Base class of the three VL model families (see the module docstring).

    Attributes: ``lm`` (the language backbone, PEFT-injected), ``projection`` (``PROJECTIONS`` or ``None``),
    ``vision`` (``VisionEncoder`` or ``None``), ``tokenizer``, ``task``, ``family`` (transformers
    ``model_type``), ``model_cfg``, ``peft_cfg``, ``lm_path``, ``visual_width``, ``width``.
    """

    task: str = ""

    def __init__(
        self,
        lm: nn.Module,
        tokenizer: Any,
        model_cfg: ModelConfig,
        peft_cfg: PeftConfig,
        *,
        family: str,
        lm_path: str,
        width: int,
        visual_width: int | None,
        vision: nn.Module | None = None,
        vision_pooling: str = "cls",
    ) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.peft_cfg = peft_cfg
        self.family = family
        self.lm_path = lm_path
        self.width = width
        self.visual_width = visual_width
        self.vision_pooling = vision_pooling
        self.vision = vision
        self.projection: nn.Module | None = None
        if self.uses_visual:
            assert visual_width is not None
            if model_cfg.projection == "none":
                check_widths(model_cfg, visual_width, width, lm_path)
            else:
                self.projection = PROJECTIONS[model_cfg.projection](visual_width, width)

    # ------------------------------------------------------------------------------------------ visual

    @property
    def uses_visual(self) -> bool:
        """False only for the blind model: no visual prefix and no routing (the language-prior baseline)."""
        return self.model_cfg.visual_prefix or self.peft_cfg.routing != "none"

    @property
    def hf(self) -> nn.Module:
        """The Hugging Face model itself (peft injects its layers in place, so calling it runs them)."""
        lm = self.lm
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm

    def train(self, mode: bool = True) -> VLModel:
        """Like ``nn.Module.train``, but a frozen vision tower always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.vision is not None and self.model_cfg.vision_tower == "frozen":
            self.vision.eval()
        return self

    def attach_vision(self) -> nn.Module:
        """Load the frozen vision encoder (``model.vision``) so the model accepts ``pixel_values``."""
        if self.vision is None:
            from vlpeft.models.towers import load_vision_encoder

            device = next(self.parameters()).device
            self.vision = load_vision_encoder(self.model_cfg, self.peft_cfg, self.vision_pooling).to(device)
            self.vision.eval()
        return self.vision

    def encode_visual(
        self,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_order: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Visual features at the LM width (B, m, d), from precomputed ``visual`` or by running the encoder.

        Returns ``None`` for the blind model. Precomputed features must be (B, m, d_v) or (B, d_v).
        ``image_order`` (B, m): which image of the sample each visual token belongs to (NLVR2: 0 for the left
        image's tokens, 1 for the right's); a projection with an image-order embedding (``vl_t5``) adds its
        row, the others have no order signal. ``None``: every token is image 0.
        """
        if not self.uses_visual:
            return None
        if visual is None:
            if pixel_values is None:
                raise ValueError(f"{type(self).__name__} uses the image: pass `visual` or `pixel_values`")
            vision = self.attach_vision()
            if self.model_cfg.vision_tower == "frozen":
                with torch.no_grad():
                    visual = vision(pixel_values, kind=self.model_cfg.visual_features)
            else:
                visual = vision(pixel_values, kind=self.model_cfg.visual_features)
        if visual.dim() == 2:
            visual = visual.unsqueeze(1)
        if visual.dim() != 3 or visual.shape[-1] != self.visual_width:
            raise ValueError(
                f"visual features must be (B, m, {self.visual_width}) (width of {self.model_cfg.vision!r}), "
                f"got {tuple(visual.shape)}"
            )
        dtype = self.hf.get_input_embeddings().weight.dtype
        if self.projection is not None:
            feats = visual.to(self.projection.weight.dtype)
            if image_order is not None and getattr(self.projection, "takes_image_order", False):
                visual = self.projection(feats, image_order.to(feats.device))
            else:
                visual = self.projection(feats)
        return visual.to(dtype)

    def routing_context(
        self, x_v: torch.Tensor | None, task: str | None = None
    ) -> contextlib.AbstractContextManager:
        """``visual_context(x_v)`` when routed layers exist, and ``task_context(task)`` when a task is given
        (multi-task batches); a no-op otherwise."""
        from vlpeft.tuners import task_context, visual_context

        stack = contextlib.ExitStack()
        if self.peft_cfg.routing != "none" and x_v is not None:
            stack.enter_context(visual_context(x_v))
        if task is not None:
            stack.enter_context(task_context(task))
        return stack

    def generate_from_embeds(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        x_v: torch.Tensor | None,
        task: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Deterministic HF ``generate`` from input embeddings inside the routing context, with scores.

        ``kwargs`` go to ``generate`` (``max_new_tokens``, ``num_beams``, ``length_penalty``, ...); the
        model's ``eos_id`` stops generation and its tokenizer's pad id pads finished beams.
        """
        with self.routing_context(x_v, task):
            return self.hf.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                do_sample=False,
                eos_token_id=self.eos_id,
                pad_token_id=self.tokenizer.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
                **kwargs,
            )

    def prefix_embeds(self, x_v: torch.Tensor | None) -> torch.Tensor | None:
        """The visual prefix tokens (B, m, d), or ``None`` when ``visual_prefix`` is off."""
        return x_v if (self.model_cfg.visual_prefix and x_v is not None) else None

    @staticmethod
    def batch_size(*tensors: torch.Tensor | None) -> int:
        """Batch size of the first tensor given."""
        for t in tensors:
            if t is not None:
                return int(t.shape[0])
        raise ValueError("cannot tell the batch size: pass visual features, pixel_values or input_ids")

    def check_length(self, length: int, what: str = "sequence") -> None:
        """Refuse inputs longer than the LM's learned positions (HF would fail with an index error)."""
        from vlpeft.families import family_of

        config = self.hf.config
        fam = family_of(self.family)
        limit = getattr(config, "max_position_embeddings", None)
        # relative positions (T5; DeBERTa without absolute position input): no hard limit
        relative = (fam is not None and fam.relative_positions) or not getattr(
            config, "position_biased_input", True
        )
        if limit is None or relative:
            return
        if fam is not None and fam.positions_after_pad:
            limit -= int(config.pad_token_id or 0) + 1  # positions start after the padding index
        if length > limit:
            raise ValueError(
                f"{what} of {length} positions (visual prefix + text) exceeds the {limit} positions of "
                f"{self.lm_path!r}; shorten the text (data.max_*_tokens, max_new_tokens) or use pooled "
                "visual features"
            )

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing in the LM; routed layers recompute with their forward-time visual context,
        so ``backward()`` may run outside the model's forward (as a trainer does)."""
        from vlpeft.tuners import checkpoint_kwargs

        self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --------------------------------------------------------------------------------------------- text

    @staticmethod
    def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad integer rows: (ids, attention_mask), both (len(rows), longest row)."""
        length = max(max((len(r) for r in rows), default=0), 1)
        out = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return out, mask

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (each family adds its own around them)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
