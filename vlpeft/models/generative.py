"""Encoder-decoder generative VL model (BART/T5 family), the VL-Adapter setting (CLIP-BART / CLIP-T5).

Encoder input: the text (task prefix + question, e.g. ``"vqa: what colour is the circle ?"`` or just
``"caption:"``) first, then the m visual tokens, with a joint attention mask (paper-notes §F.1). The decoder
generates the answer or the caption; training is teacher forcing with ``labels`` = target tokens + EOS,
-100 on padding (``encode_targets``), mean token cross-entropy (Hugging Face's own loss: ``labels`` are
shifted right into ``decoder_input_ids``). All tasks share one model; the task prefix tells them apart
(``TASK_PREFIXES``, VL-Adapter's ``--use_tasks_prompts``).

Deliberate differences from VL-Adapter (§F.1; all listed in ``docs/vladapter-deviations.md``): the visual
tokens are packed right after each sample's own text (before its padding), so their positions do not depend
on how much the batch was padded; they go through the LM's embedding module (BART: learned positions +
embedding LayerNorm; T5: relative positions), whereas VL-T5 gave them their own LayerNorm'd embedding without
text positions. The visual projection is ``model.projection``: ``vl_t5`` is VL-T5's visual embedding
(``LN(Linear)`` + the box constant + image-order rows, ``vlpeft.models.visual_embedding``), always trained as
in VL-Adapter, with NLVR2's two images at order ids 0 and 1 (``image_order``); ``linear`` / ``none`` are the
project's own. VL-Adapter's LoRA runs also trained every bias: ``peft.bias: all`` does the same. VQA answers
are generated with the VQA prefix (``answer``), never classified.

Routing in this family: every routed bottleneck of the encoder **and** the decoder (LoRA on ``q_proj`` /
``v_proj`` of self- and cross-attention, adapters after ``out_proj`` / ``fc2``) routes with the same visual
input ``X_v``: the projected visual features at the LM width, i.e. the pooled vector (m = 1) with
``model.visual_features: pooled`` or all visual tokens (the Gram form) with ``tokens``; the decoder reads it
from the context too (it never sees the visual tokens otherwise). Multi-task batches also set the batch's task
(``task=...``) as the PEFT layers' task context; NLVR2 is decided by ``score_choices`` (``true`` vs ``false``
logits) rather than by generation.
"""

from __future__ import annotations

from typing import Any

import torch

from vlpeft.data.language import TASK_PREFIXES
from vlpeft.models.base import VLModel, VLOutput


def pack_visual(
    text: torch.Tensor, mask: torch.Tensor, visual: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[text_i ; visual_i ; padding]`` per sample, from right-padded ``text`` (B, T, d) and ``visual``.

    Returns the packed embeddings (B, T + m, d) and the joint attention mask (B, T + m).
    """
    b, t, d = text.shape
    m = visual.shape[1]
    lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
    pos = torch.arange(t, device=text.device).unsqueeze(0).expand(b, t)
    text_dest = torch.where(pos < lengths, pos, pos + m)  # text tokens stay, padding moves behind the image
    vis_dest = lengths + torch.arange(m, device=text.device).unsqueeze(0)
    out = text.new_zeros(b, t + m, d)
    out = out.scatter(1, text_dest.unsqueeze(-1).expand(b, t, d), text)
    out = out.scatter(1, vis_dest.unsqueeze(-1).expand(b, m, d), visual.to(text.dtype))
    joint = torch.arange(t + m, device=text.device).unsqueeze(0) < (lengths + m)
    return out, joint.to(mask.dtype)


def sequence_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    reduction: str = "token",
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token cross-entropy of ``logits`` (B, L, V) on ``labels`` (B, L; -100 = not supervised).

    ``token``: mean over all supervised tokens. ``sample``: per-sample mean over its supervised tokens, times
    ``sample_weights`` (B,) if given, then the mean over samples.
    """
    if reduction not in ("token", "sample"):
        raise ValueError(f"loss reduction {reduction!r}: expected token or sample")
    if reduction == "token" and sample_weights is not None:
        raise ValueError("sample_weights need reduction='sample'")
    per_token = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )  # (B, L), 0 where ignored
    supervised = (labels != -100).to(per_token.dtype)
    if reduction == "token":
        return per_token.sum() / supervised.sum().clamp(min=1)
    per_sample = per_token.sum(dim=1) / supervised.sum(dim=1).clamp(min=1)
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(per_sample.dtype)
    return per_sample.mean()


class GenerativeVL(VLModel):
    """Encoder-decoder VL model: VQA answers and captions as generated text (see the module docstring)."""

    task = "generative"

    @property
    def eos_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else self.hf.config.eos_token_id)

    def encoder_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, x_v: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder ``inputs_embeds`` and mask: [prompt (method prompt);] text, then the visual tokens when the
        prefix is on."""
        from vlpeft.tuners.prompt.encoder import prepend_prompt

        embeds = self.hf.get_encoder().embed_tokens(input_ids)  # BART's scaled embedding when configured
        embeds, attention_mask = prepend_prompt(self.hf, embeds, attention_mask)  # the input-token hook
        prefix = self.prefix_embeds(x_v)
        if prefix is None:
            return embeds, attention_mask
        return pack_visual(embeds, attention_mask, prefix)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task: str | None = None,
        loss_reduction: str = "token",
        sample_weights: torch.Tensor | None = None,
        image_order: torch.Tensor | None = None,
    ) -> VLOutput:
        """Decoder logits (B, L, V) for teacher forcing on ``labels`` (B, L), and the loss.

        ``loss_reduction``: ``token`` = mean CE over every supervised token of the batch (captions);
        ``sample`` = each sample's mean token CE, times ``sample_weights`` (B,) when given (VQA: the soft
        score of the sampled answer), then the batch mean (VL-Adapter's VQA/GQA/NLVR2 losses). ``task``
        is set as the task context of the PEFT layers for this forward. ``image_order`` (B, m): each visual
        token's image (NLVR2 ``[0]*V + [1]*V``), see ``VLModel.encode_visual``.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x_v = self.encode_visual(visual, pixel_values, image_order)
        embeds, mask = self.encoder_inputs(input_ids, attention_mask, x_v)
        self.check_length(embeds.shape[1], "encoder input")
        if labels is not None:
            labels = labels.contiguous()  # HF's loss uses .view on the labels
            self.check_length(labels.shape[1], "target")
        with self.routing_context(x_v, task):
            out = self.hf(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        loss = out.loss
        if labels is not None and loss_reduction != "token":
            loss = sequence_loss(out.logits, labels, loss_reduction, sample_weights)
        elif sample_weights is not None:
            raise ValueError("sample_weights need loss_reduction='sample'")
        return VLOutput(loss=loss, logits=out.logits)

    @torch.no_grad()
    def score_choices(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        choices: tuple[str, ...],
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        task: str | None = None,
        image_order: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, len(choices)) of each choice's first token at the first decoder position.

        NLVR2 is decided this way (``true`` vs ``false``), not by generation, as VL-Adapter does. Our targets
        carry no BOS, so the first decoder position (after the decoder start token) predicts the first target
        token; VL-Adapter's targets start with BOS, so it reads position 1 after ``[</s>, <s>]``.
        """
        ids = [self.token_ids(c)[:1] for c in choices]
        if any(not i for i in ids):
            raise ValueError(f"choices {choices}: each must have at least one token")
        x_v = self.encode_visual(visual, pixel_values, image_order)
        embeds, mask = self.encoder_inputs(input_ids, attention_mask, x_v)
        start = int(self.hf.config.decoder_start_token_id)
        decoder_ids = torch.full((embeds.shape[0], 1), start, dtype=torch.long, device=embeds.device)
        with self.routing_context(x_v, task):
            logits = self.hf(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        return logits[:, 0, [i[0] for i in ids]]

    @torch.no_grad()
    def generate_ids(
        self,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        task: str = "caption",
        length_penalty: float = 1.0,
        image_order: torch.Tensor | None = None,
    ) -> Any:
        """HF ``generate`` output. Without ``input_ids`` the encoder text is the ``task`` prefix alone."""
        x_v = self.encode_visual(visual, pixel_values, image_order)
        if input_ids is None:
            batch = self.batch_size(x_v, visual, pixel_values)
            enc = self.encode_texts([""] * batch, task=task)
            input_ids, attention_mask = (
                enc["input_ids"].to(self.device),
                enc["attention_mask"].to(self.device),
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds, mask = self.encoder_inputs(input_ids, attention_mask, x_v)
        self.check_length(embeds.shape[1], "encoder input")
        self.check_length(max_new_tokens + 1, "generated text")
        return self.generate_from_embeds(
            embeds,
            mask,
            x_v,
            task,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
        )

    def generate(
        self,
        visual: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        task: str = "caption",
        image_order: torch.Tensor | None = None,
    ) -> list[str]:
        """Generated text per sample: captions by default, answers when given ``input_ids`` of questions."""
        out = self.generate_ids(
            visual, pixel_values, max_new_tokens, num_beams, input_ids, attention_mask, task,
            image_order=image_order,
        )  # fmt: skip
        return self.decode(out.sequences)

    def answer(
        self, questions: list[str], visual: torch.Tensor | None = None, max_new_tokens: int = 5, **kw: Any
    ) -> list[str]:
        """Generated answers to ``questions`` about the images of ``visual``."""
        enc = self.encode_texts(questions, task="vqa")
        return self.generate(
            visual,
            max_new_tokens=max_new_tokens,
            input_ids=enc["input_ids"].to(self.device),
            attention_mask=enc["attention_mask"].to(self.device),
            **kw,
        )

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """Text of each generated sequence (decoder start, EOS, padding and other special tokens removed)."""
        return [s.strip() for s in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]

    # ----------------------------------------------------------------------------------------- text

    def _with_ends(self, ids: list[int]) -> list[int]:
        bos = self.tokenizer.bos_token_id if self.family not in ("t5", "mt5") else None
        return ([bos] if bos is not None else []) + ids + [self.eos_id]

    def encode_texts(
        self, texts: list[str], task: str = "vqa", max_length: int | None = 32
    ) -> dict[str, torch.Tensor]:
        """Encoder ``input_ids`` / ``attention_mask``: ``[BOS] prefix text EOS`` (T5: no BOS), padded;
        at most ``max_length`` tokens in all (``None``: not truncated)."""
        prefix = TASK_PREFIXES.get(task, f"{task}: " if task else "")
        keep = None if max_length is None else max(max_length - 2, 0)
        rows = [self._with_ends(self.token_ids(prefix + t)[:keep]) for t in texts]
        ids, mask = self.pad_rows(rows, self.tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask}

    def encode_targets(self, targets: list[str], max_length: int = 26) -> torch.Tensor:
        """Decoder ``labels``: target tokens + EOS, -100 on padding."""
        rows = [[*self.token_ids(t)[: max(max_length - 1, 0)], self.eos_id] for t in targets]
        ids, mask = self.pad_rows(rows, self.tokenizer.pad_token_id)
        return ids.masked_fill(mask == 0, -100)
