"""VL-T5's visual embedding (``model.projection: vl_t5``), the visual input of every VL-Adapter model.

For visual token ``i`` of image ``j`` (VL-Adapter ``VL-T5/src/modeling_bart.py:L76-191``, flags
``use_vis_layer_norm``, ``individual_vis_layer_norm``, ``use_vis_order_embedding`` as its scripts set them)::

    v_ij = LN_f(W_f f_ij + b_f) + LN_p(W_p [box_ij, area_ij] + b_p) + E_img[j] (+ E_tok[<vis_extra_id_i>])

CLIP grid features have no boxes: VL-Adapter passes all-zero boxes (``vqa_clip_data.py:L189``), so the box
branch is the learned constant ``LN_p(b_p)``; we do the same. ``E_img`` = ``Embedding(n_images=2, d)``
(NLVR2's two images; single-image inputs use row 0). Deliberate difference: ``E_tok`` (frozen rows of the
LM's token embedding for 100 added ``<vis_extra_id>`` tokens) is left out, because our visual tokens go
through the LM's own embedding pipeline with positions (``vlpeft.models.generative``). Parameters for
``2048 → 768``: 1,582,848, all trained, as VL-Adapter always trains ``visual_embedding.*``.
"""

from __future__ import annotations

import torch
from torch import nn

BOX_DIM = 5  # (x1, x2, y1, y2, area)


def image_order_ids(batch: int, images: int, tokens: int) -> torch.Tensor:
    """(batch, images·tokens) image-order ids of ``images`` images of ``tokens`` visual tokens each, side
    by side: ``[0]*tokens + [1]*tokens + ...`` per row (VL-Adapter's NLVR2: ``[0]*V_L + [1]*V_L``)."""
    order = torch.arange(images).repeat_interleave(tokens)
    return order.unsqueeze(0).expand(batch, -1).contiguous()


class VlT5VisualEmbedding(nn.Module):
    """``LN(Linear(d_v, d))(f) + LN(Linear(5, d))(0) + Embedding(n_images, d)[image]`` (module docstring)."""

    takes_image_order = True  # VLModel.encode_visual passes the tokens' image-order ids

    def __init__(self, visual_width: int, width: int, n_images: int = 2, init_std: float = 0.02) -> None:
        super().__init__()
        self.feat = nn.Linear(visual_width, width)
        self.feat_norm = nn.LayerNorm(width)
        self.box = nn.Linear(BOX_DIM, width)
        self.box_norm = nn.LayerNorm(width)
        self.image_order = nn.Embedding(n_images, width)
        # BART's _init_weights re-initialises every Linear/Embedding of VL-T5: N(0, 0.02), zero bias.
        for module in (self.feat, self.box, self.image_order):
            nn.init.normal_(module.weight, std=init_std)
        for lin in (self.feat, self.box):
            nn.init.zeros_(lin.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The feature projection's weight (its dtype is the module's compute dtype)."""
        return self.feat.weight

    def forward(self, feats: torch.Tensor, image_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings (B, m, d) of grid features ``feats`` (B, m, d_v); ``image_ids`` (B, m) default 0."""
        boxes = feats.new_zeros(*feats.shape[:-1], BOX_DIM)
        if image_ids is None:
            image_ids = torch.zeros(feats.shape[:-1], dtype=torch.long, device=feats.device)
        return self.feat_norm(self.feat(feats)) + self.box_norm(self.box(boxes)) + self.image_order(image_ids)
