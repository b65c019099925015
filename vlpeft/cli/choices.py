"""The fixed value sets of CLI options, as ``Literal`` types: typer lists them in ``-h`` and refuses others.

Where the owning table is cheap to import (not ``vlpeft.config``: building its models costs 0.2 s) it is used
directly; the others live in modules that import torch
(which the CLI loads only when a command runs), so they are spelled here and ``tests/test_cli.py`` checks each
against its owner.
"""

from __future__ import annotations

import enum
from typing import Literal

from vlpeft.eval.vqa_normalize import REVISIONS
from vlpeft.tasks import FAMILY_BACKBONE, TASKS

DownloadGroup = Literal["all", "coco-images", "karpathy", "vqa", "gqa", "nlvr"]  # vlpeft.data.download.GROUPS
PrepareSource = Literal["coco", "own", "gqa", "nlvr"]  # vlpeft.cli.data's preparers
LinkMode = Literal["symlink", "hardlink", "copy"]  # vlpeft.data.prepare.LINKS
# An Enum, not a Literal: typer takes no list of Literals (``--only`` repeats).
PRETRAIN_PARTS = ("vit", "roberta", "gpt2", "bart")  # vlpeft.pretrain.run.ALL_PARTS
PretrainPart = enum.Enum("PretrainPart", {p: p for p in PRETRAIN_PARTS}, type=str)  # type: ignore[misc]
H5Pool = Literal["max6x6", "none"]  # vlpeft.data.vladapter_features.POOLS
H5Dtype = Literal["float16", "float32"]  # vlpeft.data.vladapter_features.OUT_DTYPES
Convention = Literal["vl_adapter", "whole"]  # vlpeft.models.accounting.CONVENTIONS
Split = Literal["train", "val", "test"]  # the Karpathy splits the loaders read
SpiceMode = Literal["auto", "off"]
MeteorMode = Literal["on", "off"]
VqaRevision = Literal[tuple(REVISIONS)]  # type: ignore[valid-type]
Family = Literal[tuple(FAMILY_BACKBONE)]  # type: ignore[valid-type]
Section = Literal[tuple(dict.fromkeys(spec.section for spec in TASKS.values()))]  # type: ignore[valid-type]
PredictTask = Literal["vqa", "gqa", "nlvr", "caption"]  # vlpeft.config.GenerativeTask
