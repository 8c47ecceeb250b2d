"""Per-class test results of a bundle's model (``results.json``, the part ``acmr bundle --run`` writes).

For every test class: how many of its test images the model names correctly (GZSL: among all classes, with
the bundle's calibration) and what the others are mistaken for (the top confusions); for every plotted test
image (the latent cache's rows, in order): its predicted class and its familiarity. The U / S / H it records
are the per-class means of these rows (:func:`acmr_core.training.metrics.gzsl_scores`), the figures
``acmr train`` wrote to ``metrics.json`` for the same model; ``unseen_as_seen`` / ``seen_as_unseen`` are the
shares (percent of images) answered across the seen/unseen divide.

Plain JSON-able dicts (no classes of their own): the service hands them to the app and the HTTP API as they
are. :func:`compute_test_results` makes one, :func:`check_test_results` validates one read from a bundle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.errors import BundleError
from acmr_core.training.metrics import gzsl_scores

RESULTS_PART = "results.json"
#: The confusions listed per class (the most frequent wrong answers).
TOP_CONFUSIONS = 3


def compute_test_results(
    labels: np.ndarray,
    predicted: np.ndarray,
    catalog: ClassCatalog,
    familiarity: Sequence[tuple[float, bool]],
    record: Mapping[str, Any] | None = None,
    top: int = TOP_CONFUSIONS,
) -> dict[str, Any]:
    """The results of ``predicted`` (catalog rows, one per test image) against ``labels`` (their classes).

    ``familiarity``: ``(familiarity, unfamiliar)`` per image (:meth:`Bundle.assess_familiarity`);
    ``record``: what else to keep (dataset, seed, gamma, the run's own figures).
    """
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    kinds = catalog.kinds
    rows = []
    for index in np.unique(labels):
        own = predicted[labels == index]
        wrong, counts = np.unique(own[own != index], return_counts=True)
        order = np.lexsort((wrong, -counts))[:top]  # most frequent first; ties by catalog order
        rows.append(
            {
                "name": catalog.names[index],
                "kind": kinds[index],
                "images": int(own.size),
                "correct": int((own == index).sum()),
                "accuracy": 100.0 * float((own == index).mean()),
                "confusions": [
                    {
                        "name": catalog.names[wrong[i]],
                        "kind": kinds[wrong[i]],
                        "images": int(counts[i]),
                        "share": 100.0 * float(counts[i]) / own.size,
                    }
                    for i in order
                ],
            }
        )
    seen = catalog.seen_mask[labels]
    scores = gzsl_scores(
        labels[seen], predicted[seen], labels[~seen], predicted[~seen],
        catalog.seen_classes, catalog.unseen_classes,
    )  # fmt: skip
    # How often the calibrated model answers across the seen/unseen divide: the seen-class bias at a glance.
    answered_seen = catalog.seen_mask[predicted]
    scores["unseen_as_seen"] = 100.0 * float(answered_seen[~seen].mean()) if (~seen).any() else 0.0
    scores["seen_as_unseen"] = 100.0 * float((~answered_seen[seen]).mean()) if seen.any() else 0.0
    return {
        "split": "test",
        **dict(record or {}),
        "metrics": scores,
        "classes": rows,
        "images": {
            "predicted": predicted.tolist(),
            "familiarity": [round(float(value), 4) for value, _ in familiarity],
            "unfamiliar": [bool(flag) for _, flag in familiarity],
        },
    }


def check_test_results(
    data: Any, catalog: ClassCatalog, image_labels: np.ndarray, where: str
) -> dict[str, Any]:
    """``data`` (read from a bundle) if it is a results record for ``catalog`` and the latent cache's images
    (``image_labels``), else a one-line :class:`BundleError` naming what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise BundleError(f"{where} lacks the 'classes' list; rebuild the bundle")
    known = set(catalog.names)
    for row in data["classes"]:
        if not isinstance(row, dict) or row.get("name") not in known:
            raise BundleError(f"{where}: a class row names no class of the catalog; rebuild the bundle")
        if not isinstance(row.get("accuracy"), (int, float)) or not isinstance(row.get("confusions"), list):
            raise BundleError(f"{where}: class {row['name']!r} lacks its accuracy or confusions")
    images = data.get("images")
    count = int(np.asarray(image_labels).size)
    if not isinstance(images, dict):
        raise BundleError(f"{where} lacks the 'images' record; rebuild the bundle")
    for key in ("predicted", "familiarity", "unfamiliar"):
        values = images.get(key)
        if not isinstance(values, list) or len(values) != count:
            raise BundleError(f"{where}: 'images.{key}' must list one value for each of the {count} images")
    if not all(isinstance(i, int) and 0 <= i < catalog.num_classes for i in images["predicted"]):
        raise BundleError(f"{where}: 'images.predicted' has indices outside 0..{catalog.num_classes - 1}")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in images["familiarity"]):
        raise BundleError(f"{where}: 'images.familiarity' must be finite numbers")
    return data
