"""Scoring a bundle: GZSL U / S / H and ZSL top-1 on held-out features, or on fresh demo-world renders."""

from __future__ import annotations

from typing import Any

import numpy as np

from acmr_core.bundle.bundle import Bundle
from acmr_core.data import demo_world
from acmr_core.errors import ACMRError, BundleError
from acmr_core.features.extract import FeatureSet
from acmr_core.pipelines.build import LabelledFeatures, as_labelled_features
from acmr_core.training.protocol import evaluate_trained

#: Evaluation images per class rendered for a demo-world bundle (``acmr evaluate --per-class``).
DEFAULT_EVAL_PER_CLASS = 20


def evaluate_bundle(
    bundle: Bundle,
    features: FeatureSet | LabelledFeatures | None = None,
    *,
    seed: int | None = None,
    per_class: int = DEFAULT_EVAL_PER_CLASS,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """GZSL U / S / H and ZSL top-1 (percent) of a bundle.

    With ``features`` (a FeatureSet or LabelledFeatures of held-out images) they are scored; without, a
    demo-world bundle renders ``per_class`` fresh images per class with ``seed`` (default
    :data:`acmr_core.data.demo_world.DEFAULT_EVAL_SEED`), which must not be a seed its training used.
    """
    if features is None:
        test, source = _render_evaluation_set(bundle, seed, per_class, device, progress)
    else:
        test, source = as_labelled_features(features, bundle.catalog), {"source": "features"}
    seen_rows = np.flatnonzero(bundle.catalog.seen_mask[test.labels])
    unseen_rows = np.flatnonzero(~bundle.catalog.seen_mask[test.labels])
    if seen_rows.size == 0 or unseen_rows.size == 0:
        raise BundleError("evaluation needs images of both seen and unseen classes")
    metrics = evaluate_trained(
        bundle.trained, test.features[seen_rows], test.labels[seen_rows],
        test.features[unseen_rows], test.labels[unseen_rows],
    )  # fmt: skip
    return {
        "bundle": bundle.name,
        **{k: float(v) for k, v in metrics.items()},
        "chance_gzsl": 100.0 / bundle.catalog.num_classes,
        "chance_zsl": 100.0 / bundle.catalog.unseen_classes.size,
        "images": {"seen": int(seen_rows.size), "unseen": int(unseen_rows.size)},
        **source,
    }


def _render_evaluation_set(
    bundle: Bundle, seed: int | None, per_class: int, device: str, progress: bool
) -> tuple[LabelledFeatures, dict[str, Any]]:
    try:
        record = demo_world.DemoWorldRecord.from_provenance(bundle.provenance)
    except BundleError as error:
        raise BundleError(f"bundle {bundle.name}: {error}") from None
    if record is None:
        raise BundleError(
            f"bundle {bundle.name} is not a demo-world bundle, so there is nothing to render; score it on "
            "held-out extracted features (acmr_core.pipelines.evaluate.evaluate_bundle)"
        )
    seed = demo_world.DEFAULT_EVAL_SEED if seed is None else int(seed)
    used = set(record.used_seeds)
    if seed in used:
        raise BundleError(
            f"render seed {seed} was used to build bundle {bundle.name}; choose a seed not in {sorted(used)}"
        )
    if per_class < 1:
        raise BundleError(f"--per-class must be at least 1, got {per_class}")
    catalog = bundle.catalog
    try:  # by attribute values, as serving draws a class: one way back from a bundle to its world
        world = demo_world.DemoWorld.of_classes(
            catalog.names, catalog.attribute_names, catalog.attribute_matrix, catalog.seen_mask
        )
    except ACMRError as error:
        raise BundleError(f"bundle {bundle.name} has a class the demo world cannot draw: {error}") from None
    backbone = bundle.create_backbone(device=device)
    features, labels, _ = demo_world.extract_renders(
        world, backbone, seed, per_class, progress=progress, description=f"evaluate (render seed {seed})",
        size=record.render_size,
    )  # fmt: skip
    rendered = {"source": "demo-world renders", "render_seed": seed, "per_class": per_class}
    return LabelledFeatures(features, labels), rendered
