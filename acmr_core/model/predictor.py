"""The one prediction path: raw backbone features -> scaled -> visual latent -> logits -> calibrated scores.

:class:`TrainedModel` is a trained ACMR with its GZSL classifier, calibration ``gamma``, feature scaler and
class metadata. Training returns one, the trained-model folder (:mod:`acmr_core.model.saved_model`) and a
bundle hold one, and every prediction (``acmr predict``, ``acmr evaluate``, the app) goes through
:meth:`TrainedModel.scores` / :meth:`TrainedModel.top_k` (the app passes the classifier it re-fitted over its
user classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from acmr_core.data.xlsa17 import FeatureScaler
from acmr_core.model.calibration import apply_temperature
from acmr_core.model.config import ACMRConfig, TrainConfig
from acmr_core.model.gzsl import GZSLClassifier, predict_scores
from acmr_core.model.network import ACMR
from acmr_core.runtime import as_tensor


@dataclass
class TrainedModel:
    """A trained ACMR with its GZSL classifier, ready to score raw (unscaled) features."""

    model: ACMR
    classifier: GZSLClassifier
    arch: ACMRConfig
    train: TrainConfig
    class_attributes: np.ndarray
    seen_classes: np.ndarray
    unseen_classes: np.ndarray
    gamma: float = 0.0
    classifier_epochs: int = 0
    selection: dict[str, Any] = field(default_factory=dict)
    scaler: FeatureScaler | None = None
    class_names: list[str] | None = None
    #: Divides the calibrated-stacking scores before the softmax (:mod:`acmr_core.model.calibration`);
    #: fitted on held-out data, 1 for a model or bundle made before it existed.
    temperature: float = 1.0

    @property
    def device(self) -> torch.device:
        return next(self.classifier.parameters()).device

    @property
    def seen_mask(self) -> Tensor:
        return self.seen_mask_for(self.classifier.num_classes)

    def seen_mask_for(self, num_classes: int) -> Tensor:
        """1 on the seen classes among ``num_classes`` (a re-fitted classifier appends classes after them)."""
        mask = torch.zeros(num_classes, device=self.device)
        mask[torch.as_tensor(self.seen_classes, device=self.device)] = 1.0
        return mask

    def to(self, device: torch.device | str) -> TrainedModel:
        self.model.to(device)
        self.classifier.to(device)
        return self

    def prepare(self, features: Any) -> Tensor:
        """Raw features -> scaled float32 tensor on the model's device."""
        array = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
        if self.scaler is not None:
            array = self.scaler.transform(array)
        return as_tensor(array, self.device, torch.float32)

    @torch.no_grad()
    def latents(self, features: Any) -> Tensor:
        self.model.eval()
        return self.model.visual_latent(self.prepare(features))

    @torch.no_grad()
    def logits(self, features: Any) -> Tensor:
        self.classifier.eval()
        return self.classifier(self.latents(features))

    @torch.no_grad()
    def scores_of_latents(
        self, latents: Tensor, gamma: float | None = None, classifier: GZSLClassifier | None = None
    ) -> Tensor:
        """Calibrated log-probabilities of visual latents: seen classes lowered by ``gamma`` (default: the
        selected one), then divided by the model's temperature (which leaves the ranking alone).
        ``classifier``: one re-fitted over more classes (the app's user classes), else ours."""
        classifier = self.classifier if classifier is None else classifier
        classifier.eval()
        mask = self.seen_mask_for(classifier.num_classes)
        scores = predict_scores(classifier(latents), mask, self.gamma if gamma is None else gamma)
        return apply_temperature(scores, self.temperature)

    def scores(
        self, features: Any, gamma: float | None = None, classifier: GZSLClassifier | None = None
    ) -> Tensor:
        """Calibrated log-probabilities ``(N, C)`` of raw features (see :meth:`scores_of_latents`)."""
        return self.scores_of_latents(self.latents(features), gamma, classifier)

    def probabilities(
        self, features: Any, gamma: float | None = None, classifier: GZSLClassifier | None = None
    ) -> np.ndarray:
        """Class probabilities ``(N, C)``: softmax of the calibrated scores (they sum to 1 per image)."""
        return torch.softmax(self.scores(features, gamma, classifier).float(), dim=-1).cpu().numpy()

    def top_k(
        self, features: Any, k: int = 5, gamma: float | None = None, classifier: GZSLClassifier | None = None
    ) -> list[list[tuple[int, float]]]:
        """Per image, the ``k`` most probable ``(class index, probability)``."""
        return rank(self.probabilities(features, gamma, classifier), k)

    def predict(self, features: Any, gamma: float | None = None) -> np.ndarray:
        return self.scores(features, gamma).argmax(dim=1).cpu().numpy()


def rank(probabilities: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row of ``(N, C)`` probabilities, the ``k`` (clamped to 1..C) most probable
    ``(class, probability)``; ties keep class order."""
    probabilities = np.atleast_2d(probabilities)
    k = max(1, min(int(k), probabilities.shape[1]))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(int(c), float(row[c])) for c in top] for row, top in zip(probabilities, order, strict=True)]
