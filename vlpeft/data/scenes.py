"""Scenes of the embedded shapes world: sampling, and the multi-label attribute targets for ViT pretraining.

A scene is a plain dict ``{"objects": [{"shape", "color", "size", "quadrant", "x", "y"}, ...]}`` (the
entries of ``scenes.json`` add ``image_id`` and ``split``; x, y are the centre in units of the image side).
Objects sit in distinct quadrants, so they never overlap and spatial relations are always defined; each
(colour, shape) pair occurs at most once, so "the red circle" is always a unique reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large")
QUADRANTS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
MAX_OBJECTS = 4  # one per quadrant

# Quadrant centres in units of the image side; (column, row) decide the spatial relations.
QUADRANT_CELL: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top right": (1, 0),
    "bottom left": (0, 1),
    "bottom right": (1, 1),
}
# Object radius as a fraction of the image side (a quadrant is 0.5 wide).
RADIUS: dict[str, float] = {"small": 0.10, "large": 0.18}

Scene = dict[str, Any]


def sample_scene(rng: np.random.Generator, max_objects: int = MAX_OBJECTS) -> Scene:
    """One scene: 1..max_objects objects in distinct quadrants, unique (colour, shape) pairs, jittered."""
    n = int(rng.integers(1, max_objects + 1))
    quadrants = rng.permutation(len(QUADRANTS))[:n]
    pairs = rng.permutation(len(COLORS) * len(SHAPES))[:n]  # distinct (colour, shape) pairs
    objects = []
    for q, pair in zip(quadrants, pairs, strict=True):
        color, shape = COLORS[pair // len(SHAPES)], SHAPES[pair % len(SHAPES)]
        size = SIZES[int(rng.integers(len(SIZES)))]
        col, row = QUADRANT_CELL[QUADRANTS[q]]
        # Jitter keeps the whole object inside its quadrant: room = quarter width minus the radius.
        room = 0.25 - RADIUS[size] - 0.02
        x = 0.25 + 0.5 * col + float(rng.uniform(-room, room))
        y = 0.25 + 0.5 * row + float(rng.uniform(-room, room))
        objects.append(
            {
                "shape": shape,
                "color": color,
                "size": size,
                "quadrant": QUADRANTS[q],
                "x": round(x, 4),
                "y": round(y, 4),
            }
        )
    # Reading order (top-left first) makes scenes.json easy to eyeball; captions shuffle on their own.
    objects.sort(key=lambda o: QUADRANTS.index(o["quadrant"]))
    return {"objects": objects}


def _objects(scene: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    return scene["objects"] if isinstance(scene, Mapping) else scene


def attribute_names() -> list[str]:
    """Names of the multi-label targets, in the order of ``attribute_labels`` (84 for the default world).

    Blocks: colour×shape presence (24), size×shape presence (8), object count one-hot for 1..4 objects (4),
    quadrant×colour (24), quadrant×shape (16), quadrant×size (8).
    """
    names = [f"color_shape:{c} {s}" for c in COLORS for s in SHAPES]
    names += [f"size_shape:{z} {s}" for z in SIZES for s in SHAPES]
    names += [f"count:{k}" for k in range(1, MAX_OBJECTS + 1)]
    names += [f"quadrant_color:{q}:{c}" for q in QUADRANTS for c in COLORS]
    names += [f"quadrant_shape:{q}:{s}" for q in QUADRANTS for s in SHAPES]
    names += [f"quadrant_size:{q}:{z}" for q in QUADRANTS for z in SIZES]
    return names


def attribute_blocks() -> dict[str, slice]:
    """Name -> slice of each block of ``attribute_labels`` (for per-block metrics)."""
    sizes = {
        "color_shape": len(COLORS) * len(SHAPES),
        "size_shape": len(SIZES) * len(SHAPES),
        "count": MAX_OBJECTS,
        "quadrant_color": len(QUADRANTS) * len(COLORS),
        "quadrant_shape": len(QUADRANTS) * len(SHAPES),
        "quadrant_size": len(QUADRANTS) * len(SIZES),
    }
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = slice(start, start + n)
        start += n
    return out


def attribute_labels(scene: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Multi-label 0/1 float32 targets of a scene (or its object list), aligned with ``attribute_names``."""
    objects = _objects(scene)
    blocks = attribute_blocks()
    y = np.zeros(blocks["quadrant_size"].stop, dtype=np.float32)
    n_s, n_c, n_z = len(SHAPES), len(COLORS), len(SIZES)
    for o in objects:
        s, c, z, q = (
            SHAPES.index(o["shape"]),
            COLORS.index(o["color"]),
            SIZES.index(o["size"]),
            QUADRANTS.index(o["quadrant"]),
        )
        y[blocks["color_shape"].start + c * n_s + s] = 1
        y[blocks["size_shape"].start + z * n_s + s] = 1
        y[blocks["quadrant_color"].start + q * n_c + c] = 1
        y[blocks["quadrant_shape"].start + q * n_s + s] = 1
        y[blocks["quadrant_size"].start + q * n_z + z] = 1
    if 1 <= len(objects) <= MAX_OBJECTS:
        y[blocks["count"].start + len(objects) - 1] = 1
    return y


def vocabulary() -> dict[str, list[str]]:
    """The world's attribute vocabularies (written into ``scenes.json``)."""
    return {
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "sizes": list(SIZES),
        "quadrants": list(QUADRANTS),
        "labels": attribute_names(),
    }
