"""Timings of the demo world and the shipped bundle on this machine.

    .venv/bin/python benchmarks/bench_demo.py [--bundle checkpoints/demo-world] [--repeats 20] [--json]

Measures: rendering one demo image; loading (validating) the bundle; the per-image work a bundle adds on top
of the backbone (scaling, ACMR encoder, classifier, calibration, top-k); placing a latent in the 2-D map;
re-fitting the GZSL classifier with one extra (user) class; and, for scale, one backbone forward.
Medians over ``--repeats`` runs. The machine is shared, so compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def median_seconds(action: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def evaluation_renders(bundle: Any, backbone: Any, per_class: int) -> tuple[Any, Any]:
    """Features and labels of ``per_class`` fresh renders per class (render seed 2026, as acmr evaluate)."""
    from acmr_core.data import demo_world

    world = demo_world.default_world().subset(list(bundle.catalog.names))
    features, labels, _ = demo_world.extract_renders(
        world, backbone, demo_world.DEFAULT_EVAL_SEED, per_class, description="evaluation renders"
    )
    return features, labels


def decoded_attribute_accuracy(bundle: Any, features: Any, labels: Any) -> dict[str, float]:
    """Per attribute group: % of fresh renders whose decoded attributes pick the class's true value."""

    from acmr_core.bundle.catalog import attribute_group

    decoded = bundle.decode_attributes(bundle.latents(features))
    truth = bundle.catalog.attribute_matrix[labels]
    groups: dict[str, list[int]] = {}
    for column, name in enumerate(bundle.catalog.attribute_names):
        groups.setdefault(attribute_group(name), []).append(column)
    return {
        f"decoded_{group}_accuracy_percent": 100.0
        * float(np.mean(decoded[:, columns].argmax(1) == truth[:, columns].argmax(1)))
        for group, columns in groups.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("checkpoints/demo-world"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--decode-per-class",
        type=int,
        default=0,
        help="also render N evaluation images per class (seed 2026) and report, per attribute group, how "
        "often the semantic decoder reads the true value from the image latent (argmax within the group), "
        "and GZSL U/S/H and ZSL top-1 on the same renders (what `acmr evaluate --per-class N` reports)",
    )
    args = parser.parse_args()

    from acmr_core.bundle.format import load_bundle
    from acmr_core.data import demo_world

    world = demo_world.default_world()
    results: dict[str, float] = {}
    results["render_one_image_ms"] = 1e3 * median_seconds(lambda: world.render(0, 5, 0), args.repeats)
    results["load_bundle_s"] = median_seconds(lambda: load_bundle(args.bundle, device="cpu"), 3)
    bundle = load_bundle(args.bundle, device="cpu")
    backbone = bundle.create_backbone(device="cpu")
    image = world.render(0, 5, 0)
    features = backbone.features([image])
    results["backbone_forward_one_image_ms"] = 1e3 * median_seconds(
        lambda: backbone.features([image]), max(3, args.repeats // 4)
    )
    results["bundle_head_one_image_ms"] = 1e3 * median_seconds(
        lambda: bundle.top_k(features, 5), args.repeats
    )
    latent = bundle.latents(features)
    results["place_one_latent_ms"] = 1e3 * median_seconds(lambda: bundle.place(latent), args.repeats)
    catalog = bundle.catalog
    extended = np.vstack([catalog.attribute_matrix, catalog.attribute_matrix[:1]])
    seen = np.append(catalog.seen_mask, False)
    results["refit_classifier_plus_one_class_s"] = median_seconds(
        lambda: bundle.refit_classifier(extended, seen), 3
    )
    results["head_overhead_percent_of_forward"] = (
        100.0 * results["bundle_head_one_image_ms"] / results["backbone_forward_one_image_ms"]
    )
    if args.decode_per_class > 0:
        from acmr_core.pipelines.build import LabelledFeatures
        from acmr_core.pipelines.evaluate import evaluate_bundle

        features, labels = evaluation_renders(bundle, backbone, args.decode_per_class)
        results.update(decoded_attribute_accuracy(bundle, features, labels))
        # Issue 23: the unseen classes' renders alone (no image of them, nor their combinations, trained).
        unseen = np.isin(labels, bundle.catalog.unseen_classes)
        unseen_accuracy = decoded_attribute_accuracy(bundle, features[unseen], labels[unseen])
        results.update({key.replace("decoded_", "unseen_decoded_"): v for key, v in unseen_accuracy.items()})
        # The same renders scored as `acmr evaluate --per-class N` scores them (same seed, same function).
        accuracy = evaluate_bundle(bundle, LabelledFeatures(features, labels), progress=False)
        results.update({key: accuracy[key] for key in ("U", "S", "H", "H_uncalibrated", "zsl_top1")})
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for name, value in results.items():
            print(f"{name:40s} {value:10.2f}")


if __name__ == "__main__":
    main()
