"""Input prompts: ``L`` trainable vectors prepended to the encoder input (VL-Adapter's prompt tuning).

``InputPrompt`` (VL-Adapter ``VL-T5/src/prompt/prompt_modeling.py:L4-23``): ``Embedding(L, d)`` applied to
``arange(L)``, then with ``reparam: mlp`` ``Linear(d, mid) → Tanh → Linear(mid, d)``; every Linear/Embedding
N(0, 0.02) with zero biases (BART's ``_init_weights`` re-initialises VL-Adapter's module). Parameters:
``L·d`` (table) ``+ (d·mid + mid) + (mid·d + d)`` (MLP): 1,261,088 for L = 40, d = 768, mid = 800.

The prompt lives on the Hugging Face model as ``vlpeft_prompt``; the encoder-decoder VL model prepends it in
``encoder_inputs`` (``prepend_prompt``): encoder ``inputs_embeds`` become ``[prompt; text; visual]`` and the
mask gets ``L`` ones in front, which the decoder's cross-attention mask follows. As in peft's prompt tuning
(and unlike VL-T5, which adds text positions before prepending), the prompt goes through the LM's embedding
pipeline, so BART gives it positions ``0..L-1`` and the text follows at ``L..``.
"""

from __future__ import annotations

import torch
from torch import nn

PROMPT_ATTR = "vlpeft_prompt"


class InputPrompt(nn.Module):
    """``L`` prompt vectors of width ``d`` (reparametrised by a tanh MLP or a plain table)."""

    def __init__(
        self, length: int, width: int, reparam: str = "mlp", mid_dim: int = 800, init_std: float = 0.02
    ):
        super().__init__()
        self.length = length
        self.embedding = nn.Embedding(length, width)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.mlp: nn.Module | None = None
        if reparam == "mlp":
            self.mlp = nn.Sequential(nn.Linear(width, mid_dim), nn.Tanh(), nn.Linear(mid_dim, width))
            for lin in (self.mlp[0], self.mlp[2]):
                nn.init.normal_(lin.weight, std=init_std)
                nn.init.zeros_(lin.bias)
        elif reparam != "none":
            raise ValueError(f"prompt reparam {reparam!r}: expected mlp or none")

    def forward(self, batch: int) -> torch.Tensor:
        """The prompt for a batch: (batch, L, d)."""
        idx = torch.arange(self.length, device=self.embedding.weight.device)
        prompt = self.embedding(idx)
        if self.mlp is not None:
            prompt = self.mlp(prompt)
        return prompt.unsqueeze(0).expand(batch, -1, -1)


def prepend_prompt(
    hf: nn.Module, embeds: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[prompt; embeds]`` and ``[1…1; mask]`` when ``hf`` carries an ``InputPrompt``, else the inputs."""
    prompt = getattr(hf, PROMPT_ATTR, None)
    if prompt is None:
        return embeds, mask
    p = prompt(embeds.shape[0]).to(embeds.dtype)
    ones = mask.new_ones(mask.shape[0], p.shape[1])
    return torch.cat([p, embeds], dim=1), torch.cat([ones, mask], dim=1)
