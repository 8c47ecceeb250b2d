"""Drawing the demo world's images: one attribute combination -> one PIL image, anti-aliased by supersampling.

The attribute groups are the renderer's vocabulary (what it can draw); which combinations are classes, and
which seeds draw which images, is :mod:`acmr_core.data.demo_world`'s.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from acmr_core.errors import ACMRError

RENDER_SIZE = 224
# Supersampling factor: draw large, then downsample with a good filter, for anti-aliased edges.
_SUPERSAMPLE = 2

ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "colour": ("red", "yellow", "green", "blue", "purple"),
    "pattern": ("plain", "striped", "dotted"),
    "shape": ("circle", "square", "triangle"),
    "size": ("small", "large"),
    "count": ("one", "three"),
    "background": ("light", "dark"),
}

_COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "yellow": (240, 200, 30),
    "green": (44, 160, 44),
    "blue": (31, 100, 220),
    "purple": (148, 70, 189),
}
# Pattern marks are drawn in a fixed near-white ink: visible on every colour, on both backgrounds.
_INK_RGB = (245, 245, 245)
# Object radius (in output pixels) ranges per size value.
_RADIUS_RANGE = {"small": (22.0, 28.0), "large": (44.0, 54.0)}
# Background grey-level ranges per background value.
_BACKGROUND_LEVEL = {"light": (205, 240), "dark": (15, 55)}


def render_class(values: dict[str, str], rng: np.random.Generator, size: int = RENDER_SIZE) -> Image.Image:
    """Draw one image of an attribute combination, with random (but ``rng``-determined) nuisance variation."""
    canvas_size = size * _SUPERSAMPLE
    scale = canvas_size / RENDER_SIZE
    level = int(rng.integers(*_BACKGROUND_LEVEL[values["background"]]))
    tint = rng.integers(-8, 9, size=3)
    background = tuple(int(np.clip(level + t, 0, 255)) for t in tint)
    image = Image.new("RGB", (canvas_size, canvas_size), background)

    radius_low, radius_high = _RADIUS_RANGE[values["size"]]
    n_objects = 1 if values["count"] == "one" else 3
    centres = _object_centres(n_objects, rng) * scale
    base = np.array(_COLOUR_RGB[values["colour"]])
    for centre in centres:
        radius = float(rng.uniform(radius_low, radius_high)) * scale
        colour = tuple(int(c) for c in np.clip(base + rng.integers(-18, 19, size=3), 0, 255))
        mask = _shape_mask(values["shape"], centre, radius, float(rng.uniform(0, 2 * math.pi)), canvas_size)
        fill = _pattern_layer(values["pattern"], colour, radius, rng, canvas_size)
        image.paste(fill, (0, 0), mask)
    if _SUPERSAMPLE != 1:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def _object_centres(n_objects: int, rng: np.random.Generator) -> np.ndarray:
    """Centres in output-pixel units, inside the central region that survives the backbone's centre crop."""
    middle = RENDER_SIZE / 2
    if n_objects == 1:
        return middle + rng.uniform(-22, 22, size=(1, 2))
    # Three objects on a jittered, randomly rotated triangle so they overlap little.
    start = rng.uniform(0, 2 * math.pi)
    angles = start + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.25, 0.25, size=3)
    spread = rng.uniform(52, 62)
    offsets = np.stack([np.cos(angles), np.sin(angles)], axis=1) * spread
    return middle + offsets + rng.uniform(-6, 6, size=(3, 2))


def _shape_mask(shape: str, centre: np.ndarray, radius: float, angle: float, canvas_size: int) -> Image.Image:
    mask = Image.new("L", (canvas_size, canvas_size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = float(centre[0]), float(centre[1])
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    elif shape in ("square", "triangle"):
        corners = 4 if shape == "square" else 3
        # Equal-area-ish polygons: a square/triangle slightly larger than the circle's radius looks balanced.
        r = radius * (1.15 if shape == "square" else 1.3)
        points = [
            (
                cx + r * math.cos(angle + k * 2 * math.pi / corners),
                cy + r * math.sin(angle + k * 2 * math.pi / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=255)
    else:
        raise ACMRError(f"unknown shape {shape!r}; expected one of {', '.join(ATTRIBUTE_GROUPS['shape'])}")
    return mask


def _pattern_layer(
    pattern: str, colour: tuple[int, ...], radius: float, rng: np.random.Generator, canvas_size: int
) -> Image.Image:
    """The object's surface over the whole canvas; the shape mask cuts it out."""
    layer = Image.new("RGB", (canvas_size, canvas_size), colour)
    if pattern == "plain":
        return layer
    draw = ImageDraw.Draw(layer)
    # Marks scale with the object so a small striped object still shows a few stripes.
    period = max(radius * float(rng.uniform(0.45, 0.6)), 4.0)
    if pattern == "striped":
        angle = float(rng.uniform(0, math.pi))
        direction = np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        middle = np.array([canvas_size / 2, canvas_size / 2])
        half = canvas_size  # long enough to cross the canvas in any direction
        width = max(int(period * 0.45), 2)
        for k in range(-int(canvas_size / period) - 1, int(canvas_size / period) + 2):
            base = middle + normal * k * period
            start, end = base - direction * half, base + direction * half
            draw.line([tuple(start), tuple(end)], fill=_INK_RGB, width=width)
    elif pattern == "dotted":
        dot = period * 0.22
        offset = rng.uniform(0, period, size=2)
        steps = np.arange(-1, canvas_size / period + 1) * period
        for y in steps + offset[1]:
            for x in steps + offset[0]:
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=_INK_RGB)
    else:
        raise ACMRError(
            f"unknown pattern {pattern!r}; expected one of {', '.join(ATTRIBUTE_GROUPS['pattern'])}"
        )
    return layer
