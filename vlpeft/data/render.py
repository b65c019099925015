"""Rendering a scene to an RGB image with PIL: shapes on light grey plus Gaussian pixel noise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlpeft.data.scenes import RADIUS

RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 60),
    "blue": (40, 75, 215),
    "yellow": (235, 205, 25),
    "purple": (135, 50, 175),
    "orange": (245, 130, 25),
}
BACKGROUND = (200, 200, 200)


def _draw_object(draw: ImageDraw.ImageDraw, obj: Mapping[str, Any], side: int) -> None:
    cx, cy, r = obj["x"] * side, obj["y"] * side, RADIUS[obj["size"]] * side
    fill = RGB[obj["color"]]
    shape = obj["shape"]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = 0.85 * r  # a square of the same "radius" looks bigger than the circle: shrink it a little
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=fill)
    elif shape == "cross":
        w = 0.33 * r
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_scene(
    scene: Mapping[str, Any], image_size: int, noise_std: float, rng: np.random.Generator
) -> Image.Image:
    """Draw the scene's objects at ``image_size``×``image_size`` and add N(0, noise_std²) noise per pixel."""
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for obj in scene["objects"]:
        _draw_object(draw, obj, image_size)
    if noise_std <= 0:
        return img
    pixels = np.asarray(img, dtype=np.float32)
    pixels += noise_std * rng.standard_normal(pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
