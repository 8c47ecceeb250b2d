"""How familiar an image is to a bundle: "is this image like anything the model was trained on?".

A zero-shot model always answers with one of its classes, even for a photograph of a cat given to a model of
rendered shapes. Each bundle therefore stores the statistics of its training images' backbone features and a
threshold, and every prediction carries a familiarity score and an ``unfamiliar`` flag.

Two statistical measures, each with its own threshold calibrated on held-out training images, and a content
check:

* **features**: the root-mean-square z-score of an image's backbone features with respect to the per-dimension
  mean and standard deviation of the training features (a diagonal Mahalanobis distance). Used by every
  bundle (bootstrapped bundles only have features at build time).
* **pixels** (when the training *images* are available at build time, as for the demo world): the share of the
  image's pixels whose (colour, local contrast) bin practically never occurs in the training images, nor does
  any neighbouring colour. Needed
  because pooled features of a random-weight backbone average a photograph into something that looks like a
  mixture of rendered regions (measured: docs/benchmarks/demo.md); pixel statistics do not average that way.
* **content** (every bundle, whenever the image is at hand): checks that the image can show an object at all
  (not tiny, flat, noise or a page of text: :mod:`acmr_core.bundle.content`); no statistics, so it holds for
  any bundle, whatever its world.

Each statistical measure is fitted on a seeded share of the training images; its threshold is a high
quantile of the *held-out* rest's values, widened by a margin. The image's distance is the largest of the
measures over its threshold, so 1 is the limit; ``familiarity = 2 ** (-distance)``: 1 for a typical training
image, 0.5 exactly at the limit, towards 0 far outside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from acmr_core.bundle.content import content_distances
from acmr_core.errors import BundleError

#: Share of the training images whose distances calibrate the threshold (never used for the statistics).
HELD_OUT_SHARE = 0.2
#: Quantile of the held-out distances, and the margin it is multiplied by, that make the threshold.
THRESHOLD_QUANTILE = 0.99
THRESHOLD_MARGIN = 1.25
#: Standard deviations are floored at this share of their median: a feature that is (nearly) constant over
#: the training images must not turn a tiny difference into an enormous z-score.
STD_FLOOR = 0.05
#: What the app and the CLI say about an image beyond the threshold.
UNFAMILIAR_NOTICE = "This image is unlike anything this model was trained on; the answer below is a guess."
METHOD = (
    "max(rms z-score of backbone features, share of rare-pixel-bin pixels, content checks: too small, "
    "uniform, noise), each over its threshold"
)
#: Pixel statistics: images are reduced to this side, colours quantised to this many levels per channel, and
#: the local contrast (largest neighbour difference of the grey level) binned at these edges. 16 levels, not
#: 8: flat paper and a retina's dark border fall in the same 32-wide bins as the renders' backgrounds
#: (docs/benchmarks/demo.md). Bundles made with 8 levels still load: the level count follows from the number
#: of stored bins.
PIXEL_SIDE = 96
COLOUR_LEVELS = 16
CONTRAST_EDGES = (1.0, 4.0, 16.0)
_CONTRAST_BINS = len(CONTRAST_EDGES) + 1
#: A bin holding less than this share of the training pixels is "rare"; the threshold never goes below the
#: floor (a handful of anti-aliased edge pixels must not make a render unfamiliar).
RARE_BIN_SHARE = 1e-5
PIXEL_THRESHOLD_FLOOR = 0.01


def pixel_histogram(image: Image.Image, colour_levels: int = COLOUR_LEVELS) -> np.ndarray:
    """Share of an image's pixels in each (colour, local contrast) bin (``colour_levels ** 3 * 4`` bins)."""
    rgb = image.convert("RGB").resize((PIXEL_SIDE, PIXEL_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.float32)
    levels = pixels.astype(np.int64) * colour_levels // 256
    colour = (levels[..., 0] * colour_levels + levels[..., 1]) * colour_levels + levels[..., 2]
    grey = pixels.mean(axis=2)
    across = np.abs(np.diff(grey, axis=1, append=grey[:, -1:]))
    down = np.abs(np.diff(grey, axis=0, append=grey[-1:, :]))
    contrast = np.digitize(np.maximum(across, down), CONTRAST_EDGES)
    bins = colour * _CONTRAST_BINS + contrast
    n_bins = colour_levels**3 * _CONTRAST_BINS
    return (np.bincount(bins.ravel(), minlength=n_bins) / bins.size).astype(np.float32)


def colour_levels_of(n_bins: int) -> int:
    """The colour levels per channel of pixel histograms with ``n_bins`` bins (``BundleError`` if none)."""
    levels = round((n_bins / _CONTRAST_BINS) ** (1 / 3))
    if levels < 2 or levels**3 * _CONTRAST_BINS != n_bins:
        raise BundleError(f"pixel statistics have {n_bins} bins, not (levels ** 3 * {_CONTRAST_BINS})")
    return levels


@dataclass(frozen=True)
class Familiarity:
    """Feature statistics of a bundle's training images, and the threshold beyond which an image is
    unfamiliar."""

    mean: np.ndarray  # (D,) float32
    scale: np.ndarray  # (D,) float32, > 0
    threshold: float
    calibration: dict[str, Any] = field(default_factory=dict)
    rare_bins: np.ndarray | None = None  # (levels**3 * 4,) bool: pixel bins the training images (almost) lack
    pixel_threshold: float | None = None

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        if mean.shape != scale.shape or mean.size == 0:
            raise BundleError(f"familiarity statistics disagree in size ({mean.size} vs {scale.size})")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise BundleError("familiarity statistics contain non-finite or non-positive values")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise BundleError(f"familiarity threshold must be a positive number, got {self.threshold!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "threshold", float(self.threshold))
        if (self.rare_bins is None) != (self.pixel_threshold is None):
            raise BundleError("pixel statistics need both the rare bins and their threshold")
        if self.rare_bins is not None:
            rare = np.asarray(self.rare_bins).astype(bool).reshape(-1)
            colour_levels_of(rare.size)  # a whole number of colour levels, or a clear error
            if not (math.isfinite(float(self.pixel_threshold)) and float(self.pixel_threshold) > 0):
                raise BundleError(f"pixel threshold must be a positive number, got {self.pixel_threshold!r}")
            object.__setattr__(self, "rare_bins", rare)
            object.__setattr__(self, "pixel_threshold", float(self.pixel_threshold))

    @property
    def pixel_colour_levels(self) -> int:
        """Colour levels per channel of the stored pixel statistics (older bundles: 8)."""
        if self.rare_bins is None:
            raise BundleError("these familiarity statistics have no pixel part")
        return colour_levels_of(self.rare_bins.size)

    @property
    def uses_pixels(self) -> bool:
        """Whether assessing an image needs the image itself (pixel statistics), not only its features."""
        return self.rare_bins is not None

    @property
    def feature_dim(self) -> int:
        return int(self.mean.size)

    def distances(self, features: Any) -> np.ndarray:
        """Distance of each image ``(N,)`` from the training images (1 ≈ a typical training image)."""
        array = np.asarray(features, dtype=np.float64)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.feature_dim:
            raise BundleError(
                f"features have shape {array.shape}; familiarity expects (N, {self.feature_dim})"
            )
        z = (array - self.mean) / self.scale
        return np.sqrt(np.mean(z * z, axis=1))

    def rare_pixel_shares(self, histograms: Any) -> np.ndarray:
        """Share of each image's pixels in bins the training images (almost) never have ``(N,)``."""
        if self.rare_bins is None:
            raise BundleError("these familiarity statistics have no pixel part")
        array = np.asarray(histograms, dtype=np.float64).reshape(-1, self.rare_bins.size)
        return array[:, self.rare_bins].sum(axis=1)

    def relative_distances(self, features: Any, images: Any = None) -> np.ndarray:
        """Each image's distance over its limit ``(N,)``: the larger measure over its threshold.

        The pixel measure and the content checks (:mod:`acmr_core.bundle.content`, every bundle) need
        ``images`` (PIL, as loaded: their own size); without them only the feature measure is used.
        """
        relative = self.distances(features) / self.threshold
        if images is None:
            return relative
        images = list(images)
        if len(images) != relative.size:
            raise BundleError(f"{len(images)} images for {relative.size} feature vectors")
        # Whatever the bundle, an image with no object in it (tiny, flat, noise) is outside its world.
        relative = np.maximum(relative, content_distances(images))
        if self.uses_pixels:
            levels = self.pixel_colour_levels
            shares = self.rare_pixel_shares([pixel_histogram(image, levels) for image in images])
            relative = np.maximum(relative, shares / float(self.pixel_threshold))
        return relative

    def assess(self, features: Any, images: Any = None) -> list[tuple[float, bool]]:
        """``(familiarity, unfamiliar)`` per image: ``2 ** -relative distance``, beyond the limit of 1."""
        relative = self.relative_distances(features, images)
        return [(float(np.exp2(-value)), bool(value > 1.0)) for value in relative]

    # --- storage (familiarity.json + familiarity.safetensors of a bundle) ---------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"mean": self.mean, "scale": self.scale}
        if self.rare_bins is not None:
            arrays["rare_bins"] = self.rare_bins.astype(np.uint8)
        return arrays

    def meta(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_parts(cls, meta: Any, arrays: Mapping[str, Any], where: str) -> Familiarity:
        if not isinstance(meta, Mapping) or not isinstance(meta.get("threshold"), (int, float)):
            raise BundleError(f"{where}: familiarity.json lacks a numeric 'threshold'")
        missing = [name for name in ("mean", "scale") if name not in arrays]
        if missing:
            raise BundleError(f"{where}: familiarity.safetensors lacks {', '.join(missing)}")
        pixel_threshold = meta.get("pixel_threshold")
        if pixel_threshold is not None and not isinstance(pixel_threshold, (int, float)):
            raise BundleError(f"{where}: familiarity.json 'pixel_threshold' is not a number")
        try:
            return cls(
                mean=np.asarray(arrays["mean"]),
                scale=np.asarray(arrays["scale"]),
                threshold=float(meta["threshold"]),
                calibration=dict(meta.get("calibration") or {}),
                rare_bins=np.asarray(arrays["rare_bins"]) if "rare_bins" in arrays else None,
                pixel_threshold=None if pixel_threshold is None else float(pixel_threshold),
            )
        except BundleError as error:
            raise BundleError(f"{where}: {error}") from None


def _held_out_split(count: int, seed: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(held_out, fitted)`` row indices: ``share`` of ``count`` held out (at least 2 of each)."""
    order = np.random.default_rng(seed).permutation(count)
    n_held_out = min(max(2, round(count * share)), count - 2)
    return order[:n_held_out], order[n_held_out:]


def _rare_bins(mean_histogram: np.ndarray) -> np.ndarray:
    """Bins that neither the training pixels nor any neighbouring colour (one level up or down per channel,
    same contrast) occupy: colours next to a common one are not "new" (a background tint that happens to
    cross a quantisation boundary must not make a render unfamiliar)."""
    from scipy.ndimage import binary_dilation  # lazy: only fitting needs scipy, loading a bundle does not

    levels = colour_levels_of(mean_histogram.size)
    shape = (levels, levels, levels, _CONTRAST_BINS)
    common = (mean_histogram >= RARE_BIN_SHARE).reshape(shape)
    common = binary_dilation(common, structure=np.ones((3, 3, 3, 1), dtype=bool))
    return ~common.reshape(-1)


def fit_familiarity(
    features: Any,
    seed: int = 0,
    held_out_share: float = HELD_OUT_SHARE,
    quantile: float = THRESHOLD_QUANTILE,
    margin: float = THRESHOLD_MARGIN,
    pixel_histograms: Any = None,
) -> Familiarity:
    """Fit the statistics on a seeded share of ``features``; calibrate the threshold on the held-out rest.

    ``pixel_histograms``: :func:`pixel_histogram` of training images (when the images are at hand): adds the
    pixel measure, fitted and calibrated the same way.
    """
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 4:
        raise BundleError(f"familiarity needs >= 4 training images, got features of shape {array.shape}")
    held_out_rows, fitted_rows = _held_out_split(array.shape[0], seed, held_out_share)
    held_out, fitted = array[held_out_rows], array[fitted_rows]
    n_held_out = held_out_rows.size
    std = fitted.std(axis=0)
    floor = STD_FLOOR * float(np.median(std)) if np.any(std > 0) else 1.0
    statistics = Familiarity(
        mean=fitted.mean(axis=0), scale=np.maximum(std, max(floor, 1e-12)), threshold=1.0
    )
    held_out_distances = statistics.distances(held_out)
    threshold = float(np.quantile(held_out_distances, quantile)) * margin
    calibration: dict[str, Any] = {
        "fitted_images": int(fitted.shape[0]),
        "held_out_images": int(n_held_out),
        "quantile": quantile,
        "margin": margin,
        "held_out_flagged": float(np.mean(held_out_distances > threshold)),
        "seed": int(seed),
    }
    rare_bins, pixel_threshold = None, None
    if pixel_histograms is not None:
        histograms = np.asarray(pixel_histograms, dtype=np.float64)
        histograms = histograms.reshape(len(histograms), -1)
        if histograms.shape[0] < 4:
            raise BundleError(f"pixel statistics need >= 4 training images, got {histograms.shape[0]}")
        held_rows, fit_rows = _held_out_split(histograms.shape[0], seed, held_out_share)
        rare_bins = _rare_bins(histograms[fit_rows].mean(axis=0))
        shares = histograms[held_rows][:, rare_bins].sum(axis=1)
        pixel_threshold = max(float(np.quantile(shares, quantile)) * margin, PIXEL_THRESHOLD_FLOOR)
        calibration["pixels"] = {
            "fitted_images": int(fit_rows.size),
            "held_out_images": int(held_rows.size),
            "rare_bin_share": RARE_BIN_SHARE,
            "threshold_floor": PIXEL_THRESHOLD_FLOOR,
            "held_out_flagged": float(np.mean(shares > pixel_threshold)),
        }
    return Familiarity(
        mean=statistics.mean,
        scale=statistics.scale,
        threshold=threshold,
        calibration=calibration,
        rare_bins=rare_bins,
        pixel_threshold=pixel_threshold,
    )
