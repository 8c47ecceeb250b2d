"""Does an image show anything at all? Checks on its content that hold for every bundle.

A bundle's familiarity statistics (:mod:`acmr_core.bundle.familiarity`) compare an image with the bundle's
training images, but an image with *nothing* in it can sit inside those statistics: a flat canvas pools to
features near the middle of everything, and its one colour may be a common background. Whatever world a
bundle was trained on, its classes are objects, so an image that cannot show one is outside it:

* **too small**: its short side is under :data:`MIN_SIDE` px (a thumbnail crop, a 1 px image);
* **(nearly) uniform**: under :data:`MIN_VARIED_SHARE` of its pixels differ visibly (by more than
  :data:`COLOUR_TOLERANCE` levels in some channel) from its median colour: a blank canvas, a faint gradient,
  a flat colour under faint noise;
* **noise**: neighbouring pixels are (nearly) uncorrelated (:data:`MAX_NOISE_CORRELATION`), at a size where
  every photograph and render measured keeps them strongly correlated.

Each check gives a ratio that is above 1 exactly when it fires; :func:`content_distances` is the largest,
which :class:`acmr_core.bundle.familiarity.Familiarity` combines with its own measures (the larger wins).
Measured on fresh demo renders, scikit-image's photographs and the generated set of
``benchmarks/bench_outside_world.py`` (docs/benchmarks/app.md): renders keep >= 2.5 % varied pixels and a
neighbour correlation >= 0.57, photographs >= 0.37, while noise is near 0 and flat images have no varied
pixel.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

#: Short side (px) under which an image is too small to show an object (the backbone would upscale a few
#: pixels into a blur).
MIN_SIDE = 32
#: Images are measured at this long side (box-filtered: noise stays uncorrelated, edges stay sharp).
WORK_SIDE = 128
#: A pixel is "varied" when some channel differs from the image's median colour by more than this.
COLOUR_TOLERANCE = 24
#: Below this share of varied pixels an image is (nearly) uniform; the smallest render object covers 2.5 %.
MIN_VARIED_SHARE = 0.01
#: Below this neighbour correlation of the grey levels an image is noise (photographs measured >= 0.37).
MAX_NOISE_CORRELATION = 0.2


def _working_pixels(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` float32 pixels at most :data:`WORK_SIDE` px on the long side."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    if max(width, height) > WORK_SIDE:
        scale = WORK_SIDE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.float32)


def varied_share(pixels: np.ndarray) -> float:
    """Share of pixels differing visibly from the median colour (0 for a flat image)."""
    median = np.median(pixels.reshape(-1, 3), axis=0)
    return float((np.abs(pixels - median).max(axis=2) > COLOUR_TOLERANCE).mean())


def neighbour_correlation(pixels: np.ndarray) -> float:
    """The smaller of the horizontal and vertical correlations of neighbouring grey levels (1 where there is
    no variation to correlate: a flat image is the uniform check's business)."""
    grey = pixels.mean(axis=2)
    values = []
    for first, second in ((grey[:, :-1], grey[:, 1:]), (grey[:-1, :], grey[1:, :])):
        if first.size < 2:  # a one-pixel-wide image has no neighbours this way
            continue
        a, b = first.ravel() - first.mean(), second.ravel() - second.mean()
        denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
        values.append(float((a * b).sum()) / denominator if denominator > 1e-6 else 1.0)
    return min(values, default=1.0)


def content_distance(image: Image.Image) -> float:
    """The largest of the three checks' ratios for one image; above 1: the image shows no object."""
    width, height = image.size
    tiny = MIN_SIDE / max(min(width, height), 1)
    pixels = _working_pixels(image)
    uniform = MIN_VARIED_SHARE / max(varied_share(pixels), 1e-6)
    noise = MAX_NOISE_CORRELATION / max(neighbour_correlation(pixels), 1e-6)
    return float(max(tiny, uniform, noise))


def content_distances(images: Iterable[Image.Image]) -> np.ndarray:
    """:func:`content_distance` of each image ``(N,)``."""
    return np.asarray([content_distance(image) for image in images], dtype=np.float64)
