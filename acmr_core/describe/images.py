"""Attributes from example images: what the model reads in each image of a new class, and the average
(the readings themselves come from :meth:`acmr_core.serving.service.StudioService.attributes_from_images`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Most example images read for one class (each is a backbone forward: about half a second on a CPU).
MAX_EXAMPLE_IMAGES = 10


@dataclass(frozen=True)
class ImageReadings:
    """What the model reads in example images of a class: one row per image (values in [0, 1]), averaged."""

    attribute_names: tuple[str, ...]
    labels: tuple[str, ...]  # one per image read
    values: np.ndarray  # (images, attributes), each row the semantic decoder's reading of one image
    refused: tuple[tuple[str, str], ...] = ()  # (image, why) for the images that could not be read

    @property
    def mean(self) -> np.ndarray:
        """Each attribute's average reading over the images, in ``attribute_names`` order."""
        return self.values.mean(axis=0)

    @property
    def average(self) -> dict[str, float]:
        return {
            name: round(float(value), 4) for name, value in zip(self.attribute_names, self.mean, strict=True)
        }

    @property
    def spread(self) -> np.ndarray:
        """Each attribute's largest minus smallest reading: where the images disagree."""
        return np.ptp(self.values, axis=0)

    def order(self) -> np.ndarray:
        """Attribute indices, strongest average first (equal averages keep ``attribute_names`` order)."""
        return np.argsort(-self.mean, kind="stable")
