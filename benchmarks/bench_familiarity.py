"""The "outside my world" flag of a bundle: real photographs vs fresh demo renders.

    .venv/bin/python benchmarks/bench_familiarity.py [--bundle checkpoints/demo-world] [--per-class 5]

Real photographs: the ones scikit-image ships inside its package (astronaut, chelsea the cat, coffee, rocket,
the motorcycle stereo pair, ...; a test/dev dependency, read offline), each whole and as its four quadrant
crops. Fresh renders: ``--per-class`` images of every class of the bundle with render seed ``--seed`` (never
used to build a bundle). Reports the share of each flagged ``unfamiliar`` (targets: photos >= 95 %, renders
<= 5 %) and the familiarity range of each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: scikit-image's real photographs (not its synthetic test patterns, binary silhouettes or micrographs).
PHOTO_LOADERS = (
    "astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "retina", "rocket", "text", "clock",
)  # fmt: skip


def real_photos() -> dict[str, Image.Image]:
    """Whole photographs and their four quadrants, as RGB PIL images, by name."""
    from skimage import data

    arrays: dict[str, np.ndarray] = {name: getattr(data, name)() for name in PHOTO_LOADERS}
    left, right, _ = data.stereo_motorcycle()
    arrays.update({"motorcycle_left": left, "motorcycle_right": right})
    photos: dict[str, Image.Image] = {}
    for name, array in arrays.items():
        image = Image.fromarray(np.asarray(array)).convert("RGB")
        photos[name] = image
        width, height = image.size
        for row in range(2):
            for column in range(2):
                box = (
                    column * width // 2,
                    row * height // 2,
                    (column + 1) * width // 2,
                    (row + 1) * height // 2,
                )
                photos[f"{name}[q{2 * row + column}]"] = image.crop(box)
    return photos


def flagged(bundle: Any, features: np.ndarray, images: list[Image.Image]) -> tuple[float, list[float]]:
    assessed = bundle.assess_familiarity(features, images)
    return 100.0 * float(np.mean([flag for _, flag in assessed])), [score for score, _ in assessed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("checkpoints/demo-world"))
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2027, help="render seed of the fresh renders")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from acmr_core.bundle.format import load_bundle
    from acmr_core.data import demo_world

    bundle = load_bundle(args.bundle, device="cpu")
    backbone = bundle.create_backbone(device="cpu")
    photos = real_photos()
    photo_share, photo_scores = flagged(
        bundle, backbone.features(list(photos.values())), list(photos.values())
    )
    world = demo_world.default_world().subset(list(bundle.catalog.names))
    renders = [image for image, _, _ in world.renders(args.seed, args.per_class)]
    render_share, render_scores = flagged(bundle, backbone.features(renders), renders)
    result = {
        "bundle": bundle.name,
        "threshold": bundle.familiarity.threshold,
        "photos": len(photos),
        "photos_flagged_percent": photo_share,
        "photo_familiarity_max": max(photo_scores),
        "photos_not_flagged": [name for name, s in zip(photos, photo_scores, strict=True) if s >= 0.5],
        "renders": len(renders),
        "render_seed": args.seed,
        "renders_flagged_percent": render_share,
        "render_familiarity_min": min(render_scores),
    }
    print(json.dumps(result, indent=1) if args.json else "\n".join(f"{k:28s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
