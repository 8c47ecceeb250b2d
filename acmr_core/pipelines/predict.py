"""``acmr predict``: the top-k classes of image files under a bundle, with familiarity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acmr_core.bundle.bundle import Bundle
from acmr_core.data.images import load_image
from acmr_core.features.backbone import Backbone


def class_kind(bundle: Bundle, class_index: int) -> str:
    return "seen" if bool(bundle.catalog.seen_mask[class_index]) else "unseen"


def predict_images(
    bundle: Bundle,
    images: Sequence[str | Path],
    *,
    top_k: int = 5,
    gamma: float | None = None,
    backbone: Backbone | None = None,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Top-k classes for image files: ``[{"image", "familiarity", "unfamiliar", "top_k": [{"class",
    "probability", "kind"}]}]`` (``unfamiliar``: the image is unlike the bundle's training images)."""
    loaded = [load_image(path) for path in images]  # a bad image raises a one-line ImageError first
    backbone = backbone if backbone is not None else bundle.create_backbone(device=device)
    bundle.check_backbone(backbone)
    features = backbone.features(loaded)
    ranked = bundle.top_k(features, k=top_k, gamma=gamma)
    assessed = bundle.assess_familiarity(features, loaded)
    return [
        {
            "image": str(path),
            "familiarity": familiarity,
            "unfamiliar": unfamiliar,
            "top_k": [
                {"class": bundle.catalog.names[c], "probability": p, "kind": class_kind(bundle, c)}
                for c, p in row
            ],
        }
        for path, row, (familiarity, unfamiliar) in zip(images, ranked, assessed, strict=True)
    ]
