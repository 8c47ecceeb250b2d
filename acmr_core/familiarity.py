"""How familiar an image is to a bundle: "is this image like anything the model was trained on?".

A zero-shot model always answers with one of its classes, even for a photograph of a cat given to a model of
rendered shapes. Each bundle therefore stores the statistics of its training images' backbone features and a
threshold, and every prediction carries a familiarity score and an ``unfamiliar`` flag.

Method: the *distance* of an image is the root-mean-square z-score of its backbone features with respect to
the per-dimension mean and standard deviation of the training features (a diagonal Mahalanobis distance,
divided by the square root of the feature size). The statistics are fitted on a seeded share of the
training images; the threshold is a high quantile of the distances of the *held-out* rest, widened by a
margin, so images like the training ones stay under it (a few percent at most are flagged) while an image
from another world lands far beyond. ``familiarity = 2 ** (-distance / threshold)``: 1 at the centre of the
training images, 0.5 exactly at the threshold, towards 0 far outside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
METHOD = "rms-z-score of backbone features (diagonal Mahalanobis)"


@dataclass(frozen=True)
class Familiarity:
    """Feature statistics of a bundle's training images, and the threshold beyond which an image is
    unfamiliar."""

    mean: np.ndarray  # (D,) float32
    scale: np.ndarray  # (D,) float32, > 0
    threshold: float
    calibration: dict[str, Any] = field(default_factory=dict)

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

    def scores(self, distances: Any) -> np.ndarray:
        """Familiarity in (0, 1] from distances: 0.5 exactly at the threshold."""
        return np.exp2(-np.asarray(distances, dtype=np.float64) / self.threshold)

    def unfamiliar(self, distances: Any) -> np.ndarray:
        """True where an image lies beyond the threshold."""
        return np.asarray(distances, dtype=np.float64) > self.threshold

    def assess(self, features: Any) -> list[tuple[float, bool]]:
        """``(familiarity, unfamiliar)`` per image."""
        distances = self.distances(features)
        return [
            (float(score), bool(flag))
            for score, flag in zip(self.scores(distances), self.unfamiliar(distances), strict=True)
        ]

    # --- storage (familiarity.json + familiarity.safetensors of a bundle) ---------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale}

    def meta(self) -> dict[str, Any]:
        return {"method": METHOD, "threshold": self.threshold, "calibration": dict(self.calibration)}

    @classmethod
    def from_parts(cls, meta: Any, arrays: Mapping[str, Any], where: str) -> Familiarity:
        if not isinstance(meta, Mapping) or not isinstance(meta.get("threshold"), (int, float)):
            raise BundleError(f"{where}: familiarity.json lacks a numeric 'threshold'")
        missing = [name for name in ("mean", "scale") if name not in arrays]
        if missing:
            raise BundleError(f"{where}: familiarity.safetensors lacks {', '.join(missing)}")
        try:
            return cls(
                mean=np.asarray(arrays["mean"]),
                scale=np.asarray(arrays["scale"]),
                threshold=float(meta["threshold"]),
                calibration=dict(meta.get("calibration") or {}),
            )
        except BundleError as error:
            raise BundleError(f"{where}: {error}") from None


def fit_familiarity(
    features: Any,
    seed: int = 0,
    held_out_share: float = HELD_OUT_SHARE,
    quantile: float = THRESHOLD_QUANTILE,
    margin: float = THRESHOLD_MARGIN,
) -> Familiarity:
    """Fit the statistics on a seeded share of ``features``; calibrate the threshold on the held-out rest."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 4:
        raise BundleError(f"familiarity needs >= 4 training images, got features of shape {array.shape}")
    order = np.random.default_rng(seed).permutation(array.shape[0])
    n_held_out = min(max(2, round(array.shape[0] * held_out_share)), array.shape[0] - 2)
    held_out, fitted = array[order[:n_held_out]], array[order[n_held_out:]]
    std = fitted.std(axis=0)
    floor = STD_FLOOR * float(np.median(std)) if np.any(std > 0) else 1.0
    statistics = Familiarity(
        mean=fitted.mean(axis=0), scale=np.maximum(std, max(floor, 1e-12)), threshold=1.0
    )
    held_out_distances = statistics.distances(held_out)
    threshold = float(np.quantile(held_out_distances, quantile)) * margin
    return Familiarity(
        mean=statistics.mean,
        scale=statistics.scale,
        threshold=threshold,
        calibration={
            "fitted_images": int(fitted.shape[0]),
            "held_out_images": int(n_held_out),
            "quantile": quantile,
            "margin": margin,
            "held_out_flagged": float(np.mean(held_out_distances > threshold)),
            "seed": int(seed),
        },
    )
