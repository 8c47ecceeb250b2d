"""Honest confidence: a temperature on the calibrated-stacking scores, and how calibration is measured.

The GZSL classifier is trained for a handful of epochs on noisy latents, so its softmax is far flatter than
its accuracy warrants (the demo bundle was right on 143 of 144 fresh renders at a median probability of
0.15). One scalar ``T`` divides the scores *after* calibrated stacking, ``log_softmax(scores / T)``: the
ranking (hence every top-1, and what ``gamma`` does to it) is unchanged, only the probabilities move.
``T`` is fitted by minimising the negative log-likelihood on held-out data (temperature scaling, Guo et al.
2017): the validation split's seen and unseen parts when a bundle is built
(:mod:`acmr_core.training.selection`), or fresh images of known classes for an existing bundle
(:mod:`acmr_core.pipelines.calibrate`). A bundle without one scores with ``T = 1``.

Public interface:

* :func:`apply_temperature` ``(scores, temperature) -> log-probabilities``.
* :func:`fit_temperature` ``(scores, labels) -> float`` — the NLL-minimising temperature.
* :func:`check_temperature` — a finite, positive, bounded number or a one-line :class:`ACMRError`.
* :func:`calibration_report` ``(probabilities, labels) -> dict`` — top-1 accuracy, NLL, ECE (10 bins, top-1)
  and the median top-1 probability of right answers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor
from torch.nn import functional as F

from acmr_core.errors import ACMRError, quote_value
from acmr_core.runtime import as_tensor

#: Temperatures searched (and accepted from a bundle): beyond these the probabilities are all-or-nothing or
#: uniform in float32 anyway, and a bound keeps a corrupt value from turning every score into NaN.
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 1e3
#: Bins of the expected calibration error (top-1 confidence, equal width), as in the issue's target.
ECE_BINS = 10


def check_temperature(value: object) -> float:
    """``value`` as a float in [:data:`MIN_TEMPERATURE`, :data:`MAX_TEMPERATURE`], else a one-line error."""
    try:
        temperature = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ACMRError(f"temperature must be a positive number, got {quote_value(value)}") from None
    if not (math.isfinite(temperature) and MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
        raise ACMRError(
            f"temperature must be a number between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}, "
            f"got {temperature:g}"
        )
    return temperature


def apply_temperature(scores: Tensor, temperature: float) -> Tensor:
    """Log-probabilities ``log_softmax(scores / T)`` of calibrated-stacking scores (``T = 1``: unchanged
    up to normalisation)."""
    return F.log_softmax(scores / float(temperature), dim=-1)


def _smoothed_nll(scores: Tensor, labels: Tensor, temperature: float, smoothing: float) -> float:
    """Cross-entropy with ``smoothing`` of the target mass spread evenly over the classes that can be
    answered (finite scores: a validation split masks the others with -inf, which take none)."""
    log_p = apply_temperature(scores, temperature)
    finite = torch.isfinite(log_p)
    spread = torch.where(finite, log_p, torch.zeros_like(log_p)).sum(dim=1) / finite.sum(dim=1)
    picked = log_p.gather(1, labels[:, None])[:, 0]
    return float(-((1.0 - smoothing) * picked + smoothing * spread).mean())


def default_smoothing(count: int) -> float:
    """``1 / (N + 2)``: Laplace's rule of succession for the error rate of a model that made no error on
    ``N`` images. Without it a model right on every held-out image (the demo bundle is, on renders) has its
    NLL fall forever as ``T -> 0``, and the fit would claim certainty no finite sample supports."""
    return 1.0 / (int(count) + 2)


@torch.no_grad()
def fit_temperature(scores: Any, labels: Any, smoothing: float | None = None) -> float:
    """The temperature minimising the cross-entropy of ``labels`` under ``softmax(scores / T)``, the labels
    smoothed by ``smoothing`` (default :func:`default_smoothing`: a negligible change where the model makes
    errors, a finite answer where it makes none); a bounded search over ``log T``."""
    cpu = torch.device("cpu")
    scores_t = as_tensor(scores, cpu, torch.float64)
    labels_t = as_tensor(labels, cpu, torch.int64)
    if scores_t.ndim != 2 or scores_t.shape[0] != labels_t.numel() or labels_t.numel() == 0:
        raise ACMRError(f"fit_temperature needs (N, C) scores and N labels, got {tuple(scores_t.shape)}")
    eps = default_smoothing(labels_t.numel()) if smoothing is None else float(smoothing)
    result = minimize_scalar(
        lambda log_t: _smoothed_nll(scores_t, labels_t, math.exp(log_t), eps),
        bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-1 ECE: the mean over equal-width confidence bins of |accuracy - confidence|, weighted by size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    slot = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    error = 0.0
    for index in range(bins):
        members = slot == index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def calibration_report(probabilities: Any, labels: Any) -> dict[str, float]:
    """Top-1 accuracy, mean NLL, ECE (:data:`ECE_BINS` bins) and the median top-1 probability of the right
    answers, of ``(N, C)`` probabilities against ``N`` labels."""
    probs = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(labels, dtype=np.int64)
    correct = probs.argmax(axis=1) == truth
    picked = probs[np.arange(truth.size), truth]
    right = probs.max(axis=1)[correct]
    return {
        "images": int(truth.size),
        "top1": float(correct.mean()),
        "nll": float(-np.mean(np.log(np.clip(picked, 1e-12, None)))),
        "ece": expected_calibration_error(probs, truth),
        "median_right_probability": float(np.median(right)) if right.size else float("nan"),
    }
