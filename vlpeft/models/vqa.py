"""Encoder + classifier for VQA (RoBERTa/BERT family), as in the routing paper's ViT + RoBERTa model.

Input sequence: ``[X_v (m visual prefix tokens) ; <s> question </s>]`` given to the encoder as
``inputs_embeds``. A 2-layer head ``Linear(d, k·d) → LayerNorm → GELU → Linear(k·d, n_answers)`` reads the
final hidden state at position 0 — the (first) visual prefix token, or ``<s>``/[CLS] for the blind model.
Loss: BCE-with-logits on the soft scores (official VQA accuracy of each answer), averaged over the batch and
**summed** over answers (i.e. the element mean × n_answers, as in the embedded-world calibration; with 3129
answers a plain element mean gives vanishing gradients). ``predict`` = argmax over answers.

Deliberate differences from the released code (paper-notes §H.2):
- P6: the word embeddings are looked up once and the whole ``[prefix ; words]`` sequence goes through the
  embedding module (positions, token types, LayerNorm) exactly once; the released prefix models applied the
  embedding module twice. The head reads the hidden state directly: no pooler (RoBERTa checkpoints have no
  trained pooler, so the released model used a frozen random ``dense + tanh`` there).
- Routing and the prefix are independent switches (``peft.routing``, ``model.visual_prefix``); pitfall P1
  (routing silently off in the RoBERTa scripts) cannot happen.
- Loss scale: the released code uses ``BCEWithLogitsLoss`` with its default element mean; we sum over
  answers (× n_answers). Same minimiser, a learning-rate-sized difference in gradient scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlpeft.models.base import VLModel, VLOutput


class VqaHead(nn.Sequential):
    """``Linear(d, k·d) → LayerNorm → GELU → Linear(k·d, n_answers)``; weights N(0, 0.02), biases 0."""

    def __init__(self, width: int, n_answers: int, hidden_mult: int = 2) -> None:
        hidden = hidden_mult * width
        super().__init__(
            nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, n_answers)
        )
        for layer in (self[0], self[3]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits on soft scores, summed over answers and averaged over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="mean")
    return bce * logits.shape[-1]


class VqaClassifier(VLModel):
    """VQA as classification over the answer vocabulary (see the module docstring)."""

    task = "vqa"

    def __init__(self, *args: Any, n_answers: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if n_answers < 1:
            raise ValueError(f"n_answers must be ≥ 1, got {n_answers}")
        self.n_answers = n_answers
        self.head = VqaHead(self.width, n_answers, self.model_cfg.classifier_hidden_mult)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> VLOutput:
        """Answer logits (B, n_answers); ``loss`` when soft-score ``targets`` (B, n_answers) are given."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x_v = self.encode_visual(visual, pixel_values)
        embeds = self.hf.get_input_embeddings()(input_ids)
        mask = attention_mask
        prefix = self.prefix_embeds(x_v)
        if prefix is not None:
            embeds = torch.cat([prefix.to(embeds.dtype), embeds], dim=1)
            ones = attention_mask.new_ones(attention_mask.shape[0], prefix.shape[1])
            mask = torch.cat([ones, attention_mask], dim=1)
        self.check_length(embeds.shape[1])
        with self.routing_context(x_v):
            hidden = self.hf(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        logits = self.head(hidden[:, 0].to(self.head[0].weight.dtype))
        loss = vqa_loss(logits, targets) if targets is not None else None
        return VLOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        """Answer indices (B,) = argmax of the logits. Extra batch keys (e.g. ``targets``) are ignored."""
        return self.forward(input_ids, attention_mask, visual, pixel_values).logits.argmax(dim=-1)

    def encode_questions(self, questions: list[str], max_length: int = 20) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` for questions: ``<s>/[CLS] q </s>/[SEP]``, right-padded.

        ``max_length`` counts the text tokens (the visual prefix comes on top); the question is truncated so
        the closing token is always kept.
        """
        tok = self.tokenizer
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        ends = [t for t in (cls_id, sep_id) if t is not None]
        rows = []
        for q in questions:
            ids = self.token_ids(q)[: max(max_length - len(ends), 0)]
            rows.append(
                ([cls_id] if cls_id is not None else []) + ids + ([sep_id] if sep_id is not None else [])
            )
        ids, mask = self.pad_rows(rows, tok.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask}
