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
  every photograph and render measured keeps them strongly correlated;
* **text**: a mostly plain page (at most :data:`MAX_PAGE_VARIED` of its pixels differ from its median colour)
  whose rows of ink are cut into many pieces: in a quarter of the rows that hold ink, at least
  :data:`MIN_TEXT_RUNS` separate runs of it (letters), where an object gives one run per row it crosses (a
  row through three dotted shapes: at most 8 measured) — and gathered in lines: the share of ink per row
  varies across the rows by at least :data:`MIN_LINE_CONTRAST` of its mean (text 0.91-4.4 measured), where
  it is even over a textured photograph with as many runs (grass, gravel, brick, stars: 0.33-0.38).

Each check gives a ratio that is above 1 exactly when it fires; :func:`content_distances` is the largest,
which :class:`acmr_core.bundle.familiarity.Familiarity` combines with its own measures (the larger wins).
Measured on fresh demo renders, scikit-image's photographs and the generated set of
``benchmarks/bench_outside_world.py`` (docs/benchmarks/app.md): renders keep >= 2.5 % varied pixels and a
neighbour correlation >= 0.57, photographs >= 0.37, while noise is near 0 and flat images have no varied
pixel; screenshots of text (Pillow's font, 10-60 px) had >= 20 runs of ink per row, renders <= 8.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

#: Short side (px) under which an image is too small to show an object (the backbone would upscale a few
#: pixels into a blur).
MIN_SIDE = 32
#: Images are measured at this long side (box-filtered: noise stays uncorrelated, edges stay sharp); text at
#: :data:`TEXT_SIDE`, where the letters of a 10 px font on a 1000 px screenshot are still apart.
WORK_SIDE = 128
TEXT_SIDE = 512
#: A pixel is "varied" when some channel differs from the image's median colour by more than this.
COLOUR_TOLERANCE = 24
#: Below this share of varied pixels an image is (nearly) uniform; the smallest render object covers 2.5 %.
MIN_VARIED_SHARE = 0.01
#: Below this neighbour correlation of the grey levels an image is noise (photographs measured >= 0.37).
MAX_NOISE_CORRELATION = 0.2
#: Text: a page with at most this share of varied pixels whose inked rows hold this many runs of ink (75th
#: percentile over the rows): measured 20.75-44 on text screenshots, at most 8 on renders.
MAX_PAGE_VARIED = 0.4
MIN_TEXT_RUNS = 16
#: Coefficient of variation of the per-row ink share that makes ink "lines" (text 0.91-4.4; textures <= 0.38).
MIN_LINE_CONTRAST = 0.6
TEXT_ROW_QUANTILE = 0.75


def _pixels_at(image: Image.Image, side: int) -> np.ndarray:
    """``(H, W, 3)`` float32 pixels at most ``side`` px on the long side."""
    width, height = image.size
    if max(width, height) > side:
        scale = side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _varied(pixels: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels differing visibly from the median colour."""
    median = np.median(pixels.reshape(-1, 3), axis=0)
    return np.abs(pixels - median).max(axis=2) > COLOUR_TOLERANCE


def varied_share(pixels: np.ndarray) -> float:
    """Share of pixels differing visibly from the median colour (0 for a flat image)."""
    return float(_varied(pixels).mean())


def ink_runs_per_row(ink: np.ndarray) -> tuple[float, float]:
    """``(runs, line_contrast)`` of an ink mask (the varied pixels): runs of ink per row at
    :data:`TEXT_ROW_QUANTILE` over the rows holding any (0 for a page with no ink), and the coefficient of
    variation of the rows' ink shares."""
    runs = (ink[:, 1:] & ~ink[:, :-1]).sum(axis=1) + ink[:, 0]
    inked = runs[runs > 0]
    if inked.size == 0:
        return 0.0, 0.0
    shares = ink.mean(axis=1)
    return float(np.quantile(inked, TEXT_ROW_QUANTILE)), float(shares.std() / shares.mean())


def text_ratio(page: np.ndarray) -> float:
    """How text-like a page is: its runs of ink per row over :data:`MIN_TEXT_RUNS` when it is a plain page
    whose ink is gathered in lines, else 0."""
    ink = _varied(page)  # one mask for both tests
    if float(ink.mean()) > MAX_PAGE_VARIED:
        return 0.0
    runs, line_contrast = ink_runs_per_row(ink)
    return runs / MIN_TEXT_RUNS if line_contrast >= MIN_LINE_CONTRAST else 0.0


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
    """The largest of the checks' ratios for one image; above 1: the image shows no object."""
    width, height = image.size
    tiny = MIN_SIDE / max(min(width, height), 1)
    rgb = image.convert("RGB")
    page = _pixels_at(rgb, TEXT_SIDE)
    pixels = _pixels_at(Image.fromarray(page.astype(np.uint8)), WORK_SIDE)
    uniform = MIN_VARIED_SHARE / max(varied_share(pixels), 1e-6)
    noise = MAX_NOISE_CORRELATION / max(neighbour_correlation(pixels), 1e-6)
    return float(max(tiny, uniform, noise, text_ratio(page)))


def content_distances(images: Iterable[Image.Image]) -> np.ndarray:
    """:func:`content_distance` of each image ``(N,)``."""
    return np.asarray([content_distance(image) for image in images], dtype=np.float64)
