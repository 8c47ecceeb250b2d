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
    def average(self) -> dict[str, float]:
        mean = self.values.mean(axis=0)
        return {name: round(float(value), 4) for name, value in zip(self.attribute_names, mean, strict=True)}

    def rows(self, count: int | None = None) -> tuple[list[str], list[list[object]]]:
        """(header, rows) of the strongest average attributes with each image's reading and the spread
        (largest minus smallest reading: where the images disagree)."""
        mean = self.values.mean(axis=0)
        order = np.argsort(-mean, kind="stable")[: count or len(mean)]
        header = ["attribute", "average", "spread", *self.labels]
        rows = [
            [
                self.attribute_names[index],
                round(float(mean[index]), 2),
                round(float(np.ptp(self.values[:, index])), 2),
                *(round(float(value), 2) for value in self.values[:, index]),
            ]
            for index in order
        ]
        return header, rows
