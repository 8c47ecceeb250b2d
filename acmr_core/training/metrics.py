"""GZSL / ZSL metrics (all in percent) and aggregation over seeds.

Public interface:

* :func:`per_class_accuracy` ``(y_true, y_pred, classes) -> float`` — mean over ``classes`` (those present in
  ``y_true``) of per-class top-1 accuracy (= sklearn macro recall restricted to those labels), in percent.
  A prediction of any other class (e.g. a seen class for an unseen image) counts as wrong.
* :func:`harmonic_mean` ``(u, s)``.
* :func:`gzsl_scores` ``(y_seen, pred_seen, y_unseen, pred_unseen, seen_classes, unseen_classes)``
  ``-> {"U", "S", "H"}`` — predictions made over ALL classes.
* :func:`zsl_top1` ``(y_true, scores, unseen_classes)`` — per-class top-1 when only unseen classes compete.
* :func:`aggregate_seeds` ``(list of metric dicts) -> {key: {"mean", "std", "values"}}`` (sample std, ddof=1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import recall_score

log = logging.getLogger(__name__)


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def per_class_accuracy(y_true: Any, y_pred: Any, classes: Any) -> float:
    """Mean per-class top-1 accuracy (percent) over the ``classes`` that occur in ``y_true``."""
    y_true, y_pred = _numpy(y_true).astype(np.int64), _numpy(y_pred).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    present = np.intersect1d(_numpy(classes).astype(np.int64), y_true)
    if present.size == 0:
        return 0.0
    recall = recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    return float(100.0 * recall)


def harmonic_mean(unseen: float, seen: float) -> float:
    return 0.0 if unseen + seen <= 0 else 2.0 * unseen * seen / (unseen + seen)


def gzsl_scores(
    y_seen: Any, pred_seen: Any, y_unseen: Any, pred_unseen: Any, seen_classes: Any, unseen_classes: Any
) -> dict[str, float]:
    """GZSL accuracies (percent): U on unseen test images, S on seen test images, and their harmonic mean
    H."""
    seen = per_class_accuracy(y_seen, pred_seen, seen_classes)
    unseen = per_class_accuracy(y_unseen, pred_unseen, unseen_classes)
    return {"U": unseen, "S": seen, "H": harmonic_mean(unseen, seen)}


def zsl_top1(y_true: Any, scores: Any, unseen_classes: Any) -> float:
    """Conventional ZSL: per-class top-1 (percent) when only the unseen classes are candidates."""
    unseen = _numpy(unseen_classes).astype(np.int64)
    scores = _numpy(scores)
    predictions = unseen[np.argmax(scores[:, unseen], axis=1)]
    return per_class_accuracy(y_true, predictions, unseen)


def aggregate_seeds(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation of every numeric key shared by all per-seed result dicts."""
    if not results:
        return {}
    keys = [k for k in results[0] if all(isinstance(r.get(k), (int, float)) for r in results)]
    summary = {}
    for key in keys:
        values = np.array([float(r[key]) for r in results])
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "values": values.tolist(),
        }
    return summary
