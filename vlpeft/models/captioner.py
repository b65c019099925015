"""Decoder captioner (GPT-2 family), as in the routing paper's ViT + GPT-2 model.

Sequence: ``[start ; w_1 … w_L EOS pad …]`` where ``start`` is the visual prefix ``X_v`` (m tokens), or the
BOS embedding for the blind model. Batch convention (HF style, ``labels`` aligned with ``input_ids``):
``input_ids`` = caption tokens + EOS (no BOS), right-padded; ``labels`` = ``input_ids`` with -100 on
padding (``encode_captions`` builds both). Token ``t`` is predicted from the position before it, so the
last start position predicts ``w_1``: **every caption token, the first one and EOS included, is
supervised, and padding never is.** The loss is the mean cross-entropy over supervised tokens.

Decoding goes through Hugging Face ``generate`` with the start embeddings as ``inputs_embeds``; routed
layers read ``X_v`` from ``visual_context``, which follows beam expansion (``repeat_interleave``).
``score`` computes the exact sum of token log-probabilities of given sequences (up to and including the
first EOS), which is what beam search maximises with ``length_penalty=0``.

Deliberate differences from the released code (paper-notes §H.2, P7): the released loss
``cross_entropy(logits[:, 1:-1], tokens[:, 1:], ignore_index=0)`` never supervised the first caption token
(yet generation starts there) and supervised padding (``ignore_index=0`` is the token "!", not the pad);
here the first token is supervised, EOS is supervised once, and padding is ignored via -100.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vlpeft.models.base import VLModel, VLOutput


class Captioner(VLModel):
    """Visual-prefix GPT-2 captioner (see the module docstring)."""

    task = "caption"

    @property
    def eos_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else self.hf.config.eos_token_id)

    @property
    def bos_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        if bos is None:
            bos = self.hf.config.bos_token_id
        return int(bos if bos is not None else self.eos_id)

    def start_embeds(self, x_v: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The positions before the first caption token: the visual prefix, or BOS without a prefix."""
        prefix = self.prefix_embeds(x_v)
        emb = self.hf.get_input_embeddings()
        if prefix is not None:
            return prefix.to(emb.weight.dtype)
        bos = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=emb.weight.device)
        return emb(bos)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> VLOutput:
        """Next-token logits aligned with ``input_ids`` (B, T, V): ``logits[:, t]`` predicts token ``t``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x_v = self.encode_visual(visual, pixel_values)
        start = self.start_embeds(x_v, input_ids.shape[0])
        s = start.shape[1]
        embeds = torch.cat([start, self.hf.get_input_embeddings()(input_ids)], dim=1)
        mask = torch.cat([attention_mask.new_ones(input_ids.shape[0], s), attention_mask], dim=1)
        self.check_length(embeds.shape[1])
        with self.routing_context(x_v):
            out = self.hf(inputs_embeds=embeds, attention_mask=mask)
        logits = out.logits[:, s - 1 : s - 1 + input_ids.shape[1]]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        return VLOutput(loss=loss, logits=logits)

    # ------------------------------------------------------------------------------------- sequences

    def until_eos(self, sequences: torch.Tensor) -> torch.Tensor:
        """Boolean mask (B, L) of the tokens up to and including the first EOS (everything when no EOS)."""
        is_eos = sequences == self.eos_id
        after = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first EOS
        return ~after

    @torch.no_grad()
    def score(
        self,
        sequences: torch.Tensor,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sum of log p(token) over each sequence (B,), up to and including its first EOS.

        ``sequences`` (B, L) are generated tokens (no start token); tokens after the first EOS are padding.
        """
        keep = self.until_eos(sequences)
        labels = sequences.masked_fill(~keep, -100)
        ids = sequences.masked_fill(~keep, self.tokenizer.pad_token_id)
        logits = self.forward(ids, keep.long(), visual, pixel_values).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        tok = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return (tok * (labels != -100)).sum(dim=1)

    @torch.no_grad()
    def generate_ids(
        self,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        num_return_sequences: int = 1,
        batch_size: int | None = None,
    ) -> Any:
        """HF ``generate`` output (``sequences`` = new tokens only; ``sequences_scores`` for beam search).

        Deterministic (greedy or beam). ``batch_size`` is needed only for the blind model without inputs.
        """
        x_v = self.encode_visual(visual, pixel_values)
        batch = batch_size or self.batch_size(x_v, visual, pixel_values)
        start = self.start_embeds(x_v, batch)
        mask = torch.ones(start.shape[:2], dtype=torch.long, device=start.device)
        self.check_length(start.shape[1] + max_new_tokens, "prefix + generated caption")
        return self.generate_from_embeds(
            start,
            mask,
            x_v,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            num_return_sequences=num_return_sequences,
            length_penalty=length_penalty,
        )

    def generate(
        self,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        batch_size: int | None = None,
    ) -> list[str]:
        """One caption per image (greedy when ``num_beams == 1``, else beam search)."""
        out = self.generate_ids(
            visual, pixel_values, max_new_tokens, num_beams, length_penalty, batch_size=batch_size
        )
        return self.decode(out.sequences)

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """Text of each sequence, cut at the first EOS, special tokens removed."""
        keep = self.until_eos(sequences)
        rows = [seq[k].tolist() for seq, k in zip(sequences, keep, strict=True)]
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]

    def encode_captions(self, captions: list[str], max_length: int = 26) -> dict[str, torch.Tensor]:
        """``input_ids`` (caption + EOS, right-padded), ``attention_mask``, ``labels`` (-100 on padding).

        ``max_length`` counts caption tokens + EOS; longer captions are truncated and still end in EOS.
        """
        rows = [[*self.token_ids(c)[: max(max_length - 1, 0)], self.eos_id] for c in captions]
        ids, mask = self.pad_rows(rows, self.tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
