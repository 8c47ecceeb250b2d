"""ACMR loss terms and their epoch-dependent weights (linear warm-ups).

Public interface:

* :func:`reconstruction_loss` — L1, summed over batch and dimensions (reference
  ``L1Loss(size_average=False)``).
* :func:`kl_divergence` — KL of a diagonal Gaussian posterior to N(0, I), summed.
* :func:`distribution_alignment` — Σ_i √(‖μ_v − μ_s‖² + ‖σ_v − σ_s‖²) with σ = exp(logσ²/2).
* :func:`vsa_classification_loss` — NLL of both VSA heads (each averaged over the batch), summed.
* :class:`LossWeights` / :func:`loss_weights` ``(train, epoch)`` — β, distance and classification factors.
* :func:`acmr_loss` ``(output, features, attributes, labels, weights) -> (total, terms)``.

Everything stays a tensor (no ``.item()``), so a training step never waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from acmr_core.model.config import TrainConfig
from acmr_core.model.network import ACMROutput


def reconstruction_loss(reconstruction: Tensor, target: Tensor) -> Tensor:
    return F.l1_loss(reconstruction, target, reduction="sum")


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp())


def distribution_alignment(mu_v: Tensor, logvar_v: Tensor, mu_s: Tensor, logvar_s: Tensor) -> Tensor:
    sigma_v = torch.exp(0.5 * logvar_v)
    sigma_s = torch.exp(0.5 * logvar_s)
    squared = (mu_v - mu_s).pow(2).sum(dim=1) + (sigma_v - sigma_s).pow(2).sum(dim=1)
    return torch.sqrt(squared).sum()


def vsa_classification_loss(log_probs_visual: Tensor, log_probs_semantic: Tensor, labels: Tensor) -> Tensor:
    return F.nll_loss(log_probs_visual, labels) + F.nll_loss(log_probs_semantic, labels)


@dataclass(frozen=True)
class LossWeights:
    beta: float
    distance: float
    classify: float


def loss_weights(train: TrainConfig, epoch: int) -> LossWeights:
    """Warm-up factors for a 0-based epoch (the reference evaluates them per epoch)."""
    return LossWeights(
        beta=train.beta.value(epoch),
        distance=train.distance.value(epoch),
        classify=train.classify.value(epoch),
    )


def acmr_loss(
    output: ACMROutput, features: Tensor, attributes: Tensor, labels: Tensor, weights: LossWeights
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total ACMR loss and its (unweighted) terms, all as device tensors."""
    reconstruction = reconstruction_loss(output.features_reconstruction, features) + reconstruction_loss(
        output.attributes_reconstruction, attributes
    )
    kl = kl_divergence(output.mu_visual, output.logvar_visual) + kl_divergence(
        output.mu_semantic, output.logvar_semantic
    )
    distance = distribution_alignment(
        output.mu_visual, output.logvar_visual, output.mu_semantic, output.logvar_semantic
    )
    total = reconstruction + weights.beta * kl
    if weights.distance > 0:
        total = total + weights.distance * distance
    terms = {"reconstruction": reconstruction, "kl": kl, "distance": distance}
    if output.log_probs_visual is not None and output.log_probs_semantic is not None:
        classification = vsa_classification_loss(output.log_probs_visual, output.log_probs_semantic, labels)
        total = total + weights.classify * classification
        terms["classification"] = classification
    terms["total"] = total
    return total, terms
