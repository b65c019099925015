"""``MultiTaskData``: the multi-task binding the training loop drives (``vlpeft train --task multitask``).

One global sample index over all tasks (task offsets in ``multitask.tasks`` order); ``epoch_plan`` is
VL-Adapter's plan (``plan.epoch_plan``), so each optimizer step is one task's batch of that task's size.
Random choices inside a batch (VQA's sampled answer) are seeded by ``(seed, epoch, global index)``, so a
resumed run and every DDP rank draw the same targets. Validation scores every task on ``val_samples``
samples each epoch; ``val_metric`` is the mean of the four scores (VL-Adapter's Table 1 average).

Visual input: features from the store only (``visual_input: features``); NLVR2's two images are the
left image's tokens followed by the right image's, in the packed encoder input, with image-order ids
``[0]*m + [1]*m`` (``image_order``; VL-Adapter's ``img_order_ids``) that ``projection: vl_t5`` embeds. Other
projections have no order embedding: only the learned positions tell the images apart, and ``vl`` routing,
whose input is the sum of the images' Gram matrices, cannot (see ``docs/vladapter-deviations.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlpeft.config import Params
from vlpeft.errors import ConfigError, DataError
from vlpeft.io import write_json
from vlpeft.models.visual_embedding import image_order_ids
from vlpeft.train.multitask import plan
from vlpeft.train.multitask.tasks import CaptionGen, GenTask, GqaGen, NlvrGen, VqaGen
from vlpeft.train.sampler import subset_indices

TASK_CLASSES: dict[str, type[GenTask]] = {
    "vqa": VqaGen,
    "gqa": GqaGen,
    "nlvr": NlvrGen,
    "caption": CaptionGen,
}
TRAIN_META = "vlpeft_train.json"


@dataclass
class MultiTaskData:
    """The multi-task training set, validation and test (see the module docstring)."""

    params: Params
    model: Any
    tasks: dict[str, GenTask]
    visual_source: Any
    metric_name: str = "val_average"
    greater_is_better: bool = True
    epoch: int = 0
    _offsets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._offsets = plan.task_offsets(self.sizes)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(t.train) for name, t in self.tasks.items()}

    def __len__(self) -> int:
        return sum(self.sizes.values())

    # ------------------------------------------------------------------------------------------ plan

    def epoch_plan(self, seed: int, epoch: int) -> list[list[int]]:
        """The epoch's global batches (each of one task), VL-Adapter's plan."""
        self.epoch = epoch
        sizes = {n: self.params.multitask.batch_sizes[n] for n in self.tasks}
        return [idx for _, idx in plan.epoch_plan(self.sizes, sizes, seed, epoch)]

    def _locate(self, indices: list[int]) -> tuple[GenTask, list[int]]:
        for name, t in self.tasks.items():
            start = self._offsets[name]
            if start <= indices[0] < start + len(t.train):
                local = [i - start for i in indices]
                if any(not 0 <= i < len(t.train) for i in local):
                    raise ValueError(f"batch {indices[:4]}... mixes tasks; a multi-task batch has one task")
                return t, local
        raise IndexError(f"sample index {indices[0]} is outside the multi-task training set")

    def visual(self, task: GenTask) -> Any:
        """Callable: samples -> ``{"visual": (B, k·m, d)}`` (k images per sample), or {} for a blind model.

        With k > 1 (NLVR2) also ``image_order`` (B, k·m): ``[0]*m + [1]*m``, VL-Adapter's ``img_order_ids``.
        """

        def fetch(samples: list[Any]) -> dict[str, Any]:
            ids = [task.image_ids(s) for s in samples]
            out = self.visual_source([i for row in ids for i in row], [Path()] * sum(map(len, ids)))
            if "visual" in out:
                v = out["visual"]
                out["visual"] = v.reshape(len(samples), -1, v.shape[-1])  # images of a sample side by side
                k = len(ids[0]) if ids else 1
                if k > 1:
                    out["image_order"] = image_order_ids(len(samples), k, out["visual"].shape[1] // k)
            return out

        return fetch

    def batch(self, indices: list[int]) -> dict[str, Any]:
        task, local = self._locate(indices)
        seed = self.params.multitask.seed
        rngs = [np.random.default_rng([seed, self.epoch, i]) for i in indices]
        return task.collate(self.model, [task.train[i] for i in local], rngs, self.visual(task))

    def units(self, batch: dict[str, Any]) -> int:
        return self.tasks[batch["task"]].units(batch)

    # -------------------------------------------------------------------------------- validation/test

    def validate(self, model: Any) -> dict[str, float]:
        from vlpeft.eval.gqa_nlvr import table1_average

        out: dict[str, float] = {}
        for name, t in self.tasks.items():
            for key, value in t.score(model, t.val, self.visual(t)).items():
                out[f"val_{name}_{key}"] = value
        out["val_average"] = table1_average([out[f"val_{n}_{HEADLINE[n]}"] for n in self.tasks])
        out["val_metric"] = out["val_average"]
        return out

    def save_extra(self, model_dir: Path) -> None:
        cfg = self.params.multitask
        meta = {
            "task": "multitask",
            "tasks": list(self.tasks),
            "task_prefix": cfg.task_prefix,
            "max_question_tokens": self.params.data.max_question_tokens,
            "max_answer_tokens": cfg.max_answer_tokens,
            "visual_features": self.params.model.visual_features,
            # How the test split was decoded, so vlpeft.train.predict.Predictor decodes the same way.
            "answer_beams": cfg.answer_beams,
            "caption_beams": cfg.caption_beams,
            "max_new_tokens": self.params.evaluate.max_new_tokens,
        }
        write_json(model_dir / TRAIN_META, meta)

    def test(self, model: Any, out_dir: Path) -> dict[str, Any]:
        """Each task's test split in its official results format, scored; plus the Table 1 average."""
        from vlpeft.eval.gqa_nlvr import table1_average

        out: dict[str, Any] = {name: t.test(model, out_dir, self.visual(t)) for name, t in self.tasks.items()}
        out["average"] = table1_average([out[n]["score"] for n in self.tasks])
        return out


# The per-task validation score that enters the average (percent; CIDEr x 100).
HEADLINE = {"vqa": "accuracy", "gqa": "accuracy", "nlvr": "accuracy", "caption": "cider"}


def _image_ids(root: Path) -> dict[str, Any]:
    """Per task: sample -> feature-store image ids."""
    from vlpeft.data.nlvr import load_image_names

    nlvr_names: dict[str, Any] = {}

    def nlvr(sample: Any) -> list[int]:
        if not nlvr_names:
            nlvr_names.update(load_image_names(root))
        try:
            return [nlvr_names[sample.img0]["id"], nlvr_names[sample.img1]["id"]]
        except KeyError as exc:
            raise DataError(f"{root / 'nlvr' / 'images.json'}: image {exc.args[0]!r} is not listed") from None

    def gqa(sample: Any) -> list[int]:
        if not sample.img_id.isdigit():
            raise DataError(f"GQA image id {sample.img_id!r} is not a feature-store id (an integer)")
        return [int(sample.img_id)]

    return {
        "vqa": lambda s: [s.image_id],
        "gqa": gqa,
        "nlvr": nlvr,
        "caption": lambda s: [s[0].image_id if isinstance(s, tuple) else s.image_id],
    }


def _load(module: str, function: str, split: str) -> Any:
    """A loader ``root -> records`` of one split, imported when called."""

    def load(root: Path) -> list[Any]:
        import importlib

        return getattr(importlib.import_module(module), function)(root, split)

    return load


# Per task: (train loader, validation loader). Captions train on one sample per (image, caption) pair.
LOADERS: dict[str, tuple[Any, Any]] = {
    "vqa": (_load("vlpeft.data.vqa", "load_vqa", "train"), _load("vlpeft.data.vqa", "load_vqa", "val")),
    "gqa": (_load("vlpeft.data.gqa", "load_gqa", "train"), _load("vlpeft.data.gqa", "load_gqa", "valid")),
    "nlvr": (
        _load("vlpeft.data.nlvr", "load_nlvr", "train"),
        _load("vlpeft.data.nlvr", "load_nlvr", "valid"),
    ),
    "caption": (
        lambda root: [
            (r, c) for r in _load("vlpeft.data.coco", "load_captions", "train")(root) for c in r.captions
        ],
        _load("vlpeft.data.coco", "load_captions", "val"),
    ),
}


def _records(name: str, root: Path, cfg: Any) -> tuple[list[Any], list[Any]]:
    """(training samples, validation samples) of one task; validation capped at ``val_samples``."""
    load_train, load_val = LOADERS[name]
    train, val = load_train(root), load_val(root)
    keep = subset_indices(len(train), cfg.max_train_samples, cfg.seed)
    return [train[i] for i in keep], val[: cfg.val_samples]


def build_multitask(params: Params, data_root: Path, features_dir: Path | None) -> MultiTaskData:
    """The multi-task binding: every task's data, the encoder-decoder and the feature store."""
    from vlpeft.train.tasks import build_model_and_visual, open_visual_store

    cfg = params.multitask
    if cfg.visual_input != "features":
        raise ConfigError("multitask.visual_input: only 'features' (NLVR2 pairs come from the feature store)")
    images, store = open_visual_store(params, "multitask", features_dir)
    ids = _image_ids(Path(data_root))
    tasks: dict[str, GenTask] = {}
    for name in cfg.tasks:
        train, val = _records(name, Path(data_root), cfg)
        tasks[name] = TASK_CLASSES[name](name, params, Path(data_root), ids[name], train, val)
    model, visual = build_model_and_visual(params, "multitask", "generative", images, store)
    return MultiTaskData(params, model, tasks, visual)
