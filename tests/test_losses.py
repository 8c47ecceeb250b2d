"""Each ACMR loss term on tiny hand-checkable inputs, and the warm-up schedule."""

from __future__ import annotations

import math

import pytest
import torch

from acmr_core.errors import DataError
from acmr_core.model.config import TrainConfig, WarmUp, get_preset, make_configs
from acmr_core.model.losses import (
    LossWeights,
    acmr_loss,
    distribution_alignment,
    kl_divergence,
    loss_weights,
    reconstruction_loss,
    vsa_classification_loss,
)
from acmr_core.model.network import ACMROutput


def test_reconstruction_is_summed_l1() -> None:
    recon = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    target = torch.tensor([[0.0, 2.5], [1.0, 1.0]])
    assert reconstruction_loss(recon, target).item() == pytest.approx(1 + 0.5 + 1 + 2)


def test_kl_to_standard_normal() -> None:
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).item() == pytest.approx(0.0)
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension; logvar = log 2: 0.5 * (2 - 1 - log 2) per dimension.
    assert kl_divergence(torch.ones(1, 4), torch.zeros(1, 4)).item() == pytest.approx(2.0)
    logvar = torch.full((1, 1), math.log(2.0))
    assert kl_divergence(torch.zeros(1, 1), logvar).item() == pytest.approx(0.5 * (2 - 1 - math.log(2)))


def test_distribution_alignment() -> None:
    mu_v = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    mu_s = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    zeros = torch.zeros(2, 2)
    # Sample 1: |mu diff| = 5, same sigma; sample 2: sigma 1 vs e^{1/2} in both dims.
    logvar_s = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    expected = 5.0 + math.sqrt(2 * (1 - math.exp(0.5)) ** 2)
    assert distribution_alignment(mu_v, zeros, mu_s, logvar_s).item() == pytest.approx(expected, rel=1e-5)


def test_vsa_classification_is_sum_of_two_nlls() -> None:
    log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    labels = torch.tensor([0, 1])
    expected = 2 * (-(math.log(0.5) + math.log(0.75)) / 2)
    assert vsa_classification_loss(log_probs, log_probs, labels).item() == pytest.approx(expected)


def test_warmups_follow_the_reference_rule() -> None:
    warm = WarmUp(8.21, 7, 22)
    assert warm.value(0) == 0.0 and warm.value(7) == 0.0
    assert warm.value(12) == pytest.approx(8.21 * 5 / 15)
    assert warm.value(22) == pytest.approx(8.21) and warm.value(99) == pytest.approx(8.21)
    # The loss weights of a preset follow the same rule, from the preset's own warm-ups (read, not repeated).
    _, cub = get_preset("CUB")
    epoch = cub.classify.end_epoch  # classify fully warmed up, beta part-way
    weights = loss_weights(cub, epoch)
    assert weights.classify == pytest.approx(cub.classify.factor)
    assert weights.beta == pytest.approx(cub.beta.factor * epoch / cub.beta.end_epoch)
    assert get_preset("awa1") == get_preset("AWA1")  # names are case-insensitive


def test_presets_and_config_round_trip() -> None:
    arch, train = get_preset("SUN")
    assert TrainConfig.from_dict(train.to_dict()) == train
    assert train != get_preset("CUB")[1]  # each dataset has its own schedule
    # make_configs applies the preset's architecture on top of the data's dimensions.
    made_arch, made_train = make_configs("sun", feature_dim=64, attribute_dim=7, num_classes=9)
    assert made_train == train and made_arch.visual_decoder_hidden == arch["visual_decoder_hidden"]
    assert (made_arch.feature_dim, made_arch.attribute_dim, made_arch.num_classes) == (64, 7, 9)
    with pytest.raises(DataError, match="unknown preset"):
        get_preset("nope")
    with pytest.raises(DataError, match="unknown keys"):
        TrainConfig.from_dict({"epochs": 3, "bogus": 1})


def _output(mu_v: torch.Tensor, mu_s: torch.Tensor, with_vsa: bool) -> ACMROutput:
    zeros = torch.zeros_like(mu_v)
    log_probs = torch.log(torch.tensor([[0.5, 0.5]])) if with_vsa else None
    return ACMROutput(
        features_reconstruction=torch.tensor([[1.0, 1.0]]),
        attributes_reconstruction=torch.tensor([[0.5]]),
        mu_visual=mu_v,
        logvar_visual=zeros,
        mu_semantic=mu_s,
        logvar_semantic=zeros,
        log_probs_visual=log_probs,
        log_probs_semantic=log_probs,
    )


def test_total_loss_combines_weighted_terms() -> None:
    out = _output(torch.tensor([[3.0]]), torch.tensor([[-1.0]]), with_vsa=True)
    features, attributes, labels = torch.zeros(1, 2), torch.zeros(1, 1), torch.tensor([0])
    total, terms = acmr_loss(
        out, features, attributes, labels, LossWeights(beta=2.0, distance=3.0, classify=4.0)
    )
    reconstruction, kl, distance, nll = 2.5, 0.5 * 9 + 0.5 * 1, 4.0, 2 * math.log(2)
    assert terms["reconstruction"].item() == pytest.approx(reconstruction)
    assert terms["kl"].item() == pytest.approx(kl)
    assert terms["distance"].item() == pytest.approx(distance)
    assert total.item() == pytest.approx(reconstruction + 2 * kl + 3 * distance + 4 * nll, rel=1e-6)
    no_vsa = _output(torch.tensor([[3.0]]), torch.tensor([[-1.0]]), with_vsa=False)
    total, terms = acmr_loss(
        no_vsa, features, attributes, labels, LossWeights(beta=0.0, distance=0.0, classify=4.0)
    )
    assert "classification" not in terms and total.item() == pytest.approx(reconstruction)
