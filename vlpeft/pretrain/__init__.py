"""Unimodal pretraining of the embedded world's tiny backbones (``vlpeft pretrain``)."""

from vlpeft.pretrain.run import PARTS, pretrain_backbones

__all__ = ["PARTS", "pretrain_backbones"]
