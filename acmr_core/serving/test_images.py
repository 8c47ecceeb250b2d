"""The test images of a features-only bundle (``acmr bundle --run``): its latent cache holds every test
image of the data the model was trained on, and ``results.json`` each one's answer and the per-class results.

Such a model reads precomputed features, not images, so instead of an upload a visitor picks one of these
test images (by class): its cached visual latent is exactly what the model computed from its features, so the
answer is the one ``acmr train`` scored. A draft class is also compared with them (its nearest test images).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

from acmr_core.bundle.bundle import FEATURES_ONLY_NOTICE, Bundle
from acmr_core.errors import ACMRError, ImageError, UserClassError, quote_value

#: A draft class's preview lists this many nearest test images.
NEAREST_IMAGES = 5


@dataclass(frozen=True)
class SplitImage:
    """One test image as the picker lists it."""

    position: int  # its row in the latent cache
    image_id: str  # res101.mat's image_files entry (or "image N", 1-based)
    class_name: str  # its true class
    kind: str  # its class's kind: "seen" | "unseen"
    predicted: str  # what the model answers (bundle calibration)

    @property
    def label(self) -> str:
        """A short line: file name, then the model's answer (✓ right, ✗ wrong)."""
        mark = "✓" if self.predicted == self.class_name else f"✗ {self.predicted}"
        return f"{PurePath(self.image_id).name} · {mark}"


class SplitImages:
    """Listing, finding and comparing the test images of a bundle's latent cache (read-only, thread-safe)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.features_only = bool(bundle.features_only)
        cache = bundle.latent
        self.latents = np.asarray(cache.visual, dtype=np.float32)
        self.labels = np.asarray(cache.visual_labels, dtype=np.int64)
        self.ids = [str(item) for item in cache.image_ids]
        results = bundle.results or {}
        images = results.get("images", {})
        self._predicted = np.asarray(images.get("predicted", self.labels.tolist()), dtype=np.int64)
        self._familiarity = list(images.get("familiarity", [1.0] * self.labels.size))
        self._unfamiliar = list(images.get("unfamiliar", [False] * self.labels.size))

    def refuse_images(self) -> None:
        """Raise the one-line refusal of an image given to a features-only model (no-op otherwise)."""
        if self.features_only:
            raise ImageError(f"this model {FEATURES_ONLY_NOTICE}; pick a test image instead")

    def results(self) -> dict[str, Any]:
        """The per-class test results (a copy), or a one-line error for a bundle without them."""
        if self.bundle.results is None:
            raise ACMRError(
                "this model has no per-class test results (a bundle from 'acmr bundle --run' has them)"
            )
        return copy.deepcopy(self.bundle.results)

    def of_class(self, name: str) -> list[SplitImage]:
        """The test images of a bundle class (by name, any case), in cache order."""
        self._require_test_split()
        folded = {n.casefold(): i for i, n in enumerate(self.bundle.catalog.names)}
        index = folded.get(str(name).strip().casefold())
        if index is None:
            raise UserClassError(f"no class named {quote_value(name)} among the model's classes")
        return [self.at(int(p)) for p in np.flatnonzero(self.labels == index)]

    def pick(self, name: str, index: int) -> SplitImage:
        """The ``index``-th (0-based) test image of class ``name``, or a one-line error."""
        images = self.of_class(name)
        if not images:
            raise UserClassError(f"class {quote_value(name)} has no test images here")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(images):
            raise UserClassError(
                f"class {quote_value(name)} has {len(images)} test images; pick 0 to {len(images) - 1}, "
                f"not {quote_value(index)}"
            )
        return images[index]

    def _require_test_split(self) -> None:
        if not self.features_only:  # its plotted images are a sample of training images, not a test split
            raise UserClassError(
                "this model has no test images to pick (a bundle from 'acmr bundle --run' has them)"
            )

    def at(self, position: int) -> SplitImage:
        """The test image at row ``position`` of the latent cache, or a one-line error."""
        self._require_test_split()
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(self.ids):
            raise UserClassError(f"no test image at {quote_value(position)}")
        catalog = self.bundle.catalog
        label = int(self.labels[position])
        return SplitImage(
            position, self.ids[position], catalog.names[label], catalog.kinds[label],
            catalog.names[int(self._predicted[position])],
        )  # fmt: skip

    def familiarity(self, position: int) -> tuple[float, bool]:
        """The image's familiarity as measured from its features when the bundle was built."""
        return float(self._familiarity[position]), bool(self._unfamiliar[position])

    def nearest(
        self, latent: Sequence[float] | np.ndarray, count: int = NEAREST_IMAGES
    ) -> list[tuple[SplitImage, float]]:
        """The ``count`` test images whose visual latents are nearest to ``latent`` (e.g. a draft class's
        semantic latent), with their distances; empty for a bundle that is not features-only (its plotted
        images are not a test split)."""
        if not self.features_only or not self.labels.size:
            return []
        z = np.asarray(latent, dtype=np.float32).reshape(1, -1)
        distances = np.linalg.norm(self.latents - z, axis=1)
        count = min(count, distances.size)
        nearest = np.argpartition(distances, count - 1)[:count]
        ordered = nearest[np.argsort(distances[nearest], kind="stable")]
        return [(self.at(int(p)), float(distances[p])) for p in ordered]
