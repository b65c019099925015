"""The image-shuffled control: a trained model scored on its test split with every image swapped.

A model that reads the image loses accuracy when each question (statement, caption prompt) gets another
sample's image; a model that answers from the language prior does not. Together with the ``blind`` variant
(trained without any image) this tells "learned the task" from "learned the prior".

``shuffled_images`` is a seeded derangement of the image ids one visual-source call asks for (a single random
cycle: no image keeps its place, and the map is a bijection, so an NLVR2 pair still gets two different
images, both wrong). ``ShuffledSource`` applies it to a visual source (``(image ids, paths) -> batch``, the
feature store or the image loader of ``vlpeft.train.tasks``). ``shuffled_test`` runs a binding's own ``test``
(same split, same scorer, same files) with its source swapped, writing into a sub-directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHUFFLED_DIR = "shuffled-images"  # the control's prediction files, inside the run's output dir
# Where each kind of binding keeps its visual source: MultiTaskData, the single-task VQA/caption bindings.
SOURCE_ATTRS: tuple[str, ...] = ("visual_source", "visual")


def shuffled_images(image_ids: Sequence[int], seed: int) -> dict[int, int]:
    """A seeded derangement of the distinct ``image_ids``: each image -> another one of them (module doc)."""
    ids = list(dict.fromkeys(image_ids))
    order = np.random.default_rng([seed, 0x5F]).permutation(len(ids))
    return {ids[order[i]]: ids[order[(i + 1) % len(ids)]] for i in range(len(ids))}


@dataclass
class ShuffledSource:
    """A visual source whose every call sees the images of ``shuffled_images`` instead of the asked ones."""

    source: Any
    seed: int

    def __call__(self, image_ids: Sequence[int], paths: Sequence[Path]) -> dict[str, Any]:
        swap = shuffled_images(image_ids, self.seed)
        path_of = dict(zip(image_ids, paths, strict=True))
        ids = [swap[i] for i in image_ids]
        return self.source(ids, [path_of[i] for i in ids])


def shuffled_test(binding: Any, model: Any, out_dir: Path, seed: int) -> dict[str, Any]:
    """``binding.test(model, out_dir / SHUFFLED_DIR)`` with its visual source shuffled (restored after)."""
    attr = next((a for a in SOURCE_ATTRS if callable(vars(binding).get(a))), None)
    if attr is None:
        raise TypeError(f"{type(binding).__name__}: no visual source ({' or '.join(SOURCE_ATTRS)})")
    original = getattr(binding, attr)
    target = Path(out_dir) / SHUFFLED_DIR
    target.mkdir(parents=True, exist_ok=True)
    setattr(binding, attr, ShuffledSource(original, seed))
    try:
        return binding.test(model, target)
    finally:
        setattr(binding, attr, original)
