"""ACMR module: shapes, a batch of one, deterministic evaluation, ablations, safetensors round trip."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from acmr_core.model.config import ACMRConfig
from acmr_core.model.network import ACMR, cross_alignment_weights, vsa_reweight

TINY = {
    "feature_dim": 12,
    "attribute_dim": 5,
    "num_classes": 4,
    "latent_dim": 6,
    "visual_encoder_hidden": 10,
    "visual_decoder_hidden": 9,
    "semantic_encoder_hidden": 8,
    "semantic_decoder_hidden": 7,
    "iem_hidden": 5,
}


def tiny_model(**overrides: object) -> ACMR:
    torch.manual_seed(0)
    return ACMR(ACMRConfig(**{**TINY, **overrides}))


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes(batch: int) -> None:
    model = tiny_model()
    out = model(torch.rand(batch, 12), torch.rand(batch, 5))
    assert out.features_reconstruction.shape == (batch, 12)
    assert out.attributes_reconstruction.shape == (batch, 5)
    for tensor in (out.mu_visual, out.logvar_visual, out.mu_semantic, out.logvar_semantic):
        assert tensor.shape == (batch, 6)
    assert out.log_probs_visual.shape == (batch, 4)
    assert torch.allclose(out.log_probs_semantic.exp().sum(1), torch.ones(batch))


def test_batch_of_one_latents_and_decoders() -> None:
    model = tiny_model().eval()
    assert model.visual_latent(torch.rand(1, 12)).shape == (1, 6)
    assert model.semantic_latent(torch.rand(1, 5)).shape == (1, 6)
    assert model.decode_semantic(torch.rand(1, 6)).shape == (1, 5)
    assert model.decode_visual(torch.rand(1, 6)).shape == (1, 12)


def test_eval_is_deterministic_and_training_iem_is_random() -> None:
    model = tiny_model()
    x = torch.rand(8, 12)
    model.eval()
    assert torch.equal(model.visual_latent(x), model.visual_latent(x))
    model.train()
    # The training-mode IEM draws a fresh channel permutation per call (the reference regulariser).
    draws = [model.visual_latent(x) for _ in range(5)]
    assert any(not torch.allclose(draws[0], d) for d in draws[1:])


def test_reference_reparameterization_shares_one_eps_per_sample() -> None:
    torch.manual_seed(0)  # the reparameterisation's own draws, too
    model = tiny_model()
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    z = model.reparameterize(mu, logvar)
    eps = (z - mu) / torch.exp(logvar)
    assert torch.allclose(eps, eps[:, :1].expand_as(eps), atol=1e-5)
    standard = tiny_model(reparameterization="standard").reparameterize(mu, logvar)
    eps_std = (standard - mu) / torch.exp(0.5 * logvar)
    assert not torch.allclose(eps_std, eps_std[:, :1].expand_as(eps_std), atol=1e-3)


def test_vsa_relation_is_softmax_over_first_axis() -> None:
    generator = torch.Generator().manual_seed(0)
    zv, zs = torch.randn(2, 6, generator=generator), torch.randn(2, 6, generator=generator)
    weights = cross_alignment_weights(zv, zs)
    assert weights.shape == (2, 6, 6)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 6))
    expected = torch.softmax(torch.outer(zv[0], zs[0]), dim=0) @ zv[0]
    assert torch.allclose(vsa_reweight(zv, zs)[0][0], expected, atol=1e-6)


def test_ablations_drop_modules_and_loss_inputs() -> None:
    model = tiny_model(use_vsa=False, use_iem=False)
    out = model(torch.rand(2, 12), torch.rand(2, 5))
    assert out.log_probs_visual is None and out.log_probs_semantic is None
    keys = model.state_dict().keys()
    assert not any("iem" in k or "head" in k for k in keys)
    assert model.iem_parameters() == [] and model.vsa_parameters() == []


def test_state_dict_is_complete_and_round_trips_through_safetensors(tmp_path) -> None:
    model = tiny_model().eval()
    keys = model.state_dict().keys()
    for part in ("visual_encoder", "semantic_decoder", "visual_iem", "semantic_head"):
        assert any(k.startswith(part) for k in keys)
    assert "visual_iem.eval_permutation" in keys
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(123)  # a different init and eval permutation, overwritten by the load
    other = ACMR(ACMRConfig(**TINY))
    other.load_state_dict(load_file(str(path)))
    other.eval()
    x = torch.rand(5, 12)
    assert torch.equal(model.visual_latent(x), other.visual_latent(x))


def test_config_round_trip_and_validation() -> None:
    cfg = ACMRConfig(**TINY, use_vsa=False)
    assert ACMRConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="reparameterization"):
        ACMRConfig(reparameterization="magic")
