"""The demo bundle's offline backbone: seeded random weights with scaled residual branches — deterministic,
recorded in the backbone identity (its own hash), and refused where it does not match."""

from __future__ import annotations

import pytest
import torch

from acmr_core.bundle.format import load_bundle
from acmr_core.data import demo_world
from acmr_core.errors import BackboneError, BundleError
from acmr_core.features.backbone import BackboneIdentity, create_backbone
from acmr_core.pipelines.build import backbone_spec_from_identity
from tests.test_service import DEMO_BUNDLE


@pytest.fixture(scope="module")
def scaled():
    return create_backbone("random", device="cpu", seed=0, residual_scale=demo_world.DEFAULT_RESIDUAL_SCALE)


def test_residual_scale_sets_the_last_batchnorm_of_every_bottleneck(scaled) -> None:
    last_norms = [module.bn3 for module in scaled.model.modules() if hasattr(module, "bn3")]
    assert len(last_norms) == 33  # ResNet-101: 3 + 4 + 23 + 3 bottlenecks
    assert all(torch.all(norm.weight == demo_world.DEFAULT_RESIDUAL_SCALE) for norm in last_norms)


def test_identity_records_the_scale_and_is_reproducible(scaled) -> None:
    assert (
        scaled.identity.weight_source
        == f"random(seed=0, residual_scale={demo_world.DEFAULT_RESIDUAL_SCALE:g})"
    )
    again = create_backbone(
        "random", device="cpu", seed=0, residual_scale=demo_world.DEFAULT_RESIDUAL_SCALE, use_cache=False
    )
    assert again.identity == scaled.identity
    zero_init = create_backbone("random", device="cpu", seed=0)
    assert zero_init.identity.weights_sha256 != scaled.identity.weights_sha256
    with pytest.raises(BackboneError, match="weights_sha256 differs"):
        scaled.identity.ensure_matches(zero_init.identity)


def test_bundle_provenance_recreates_the_scaled_backbone(scaled) -> None:
    spec = backbone_spec_from_identity(scaled.identity)
    assert spec == {
        "model_name": "resnet101",
        "weights": "random",
        "seed": 0,
        "residual_scale": demo_world.DEFAULT_RESIDUAL_SCALE,
    }
    restored = BackboneIdentity.from_dict(scaled.identity.to_dict())
    assert restored == scaled.identity


def test_the_shipped_bundle_learns_over_it_and_refuses_the_plain_seeded_backbones(scaled) -> None:
    bundle = load_bundle(DEMO_BUNDLE, device="cpu")
    # Issue 23: the seeded scaled weights with a learnt part the bundle carries (backbone.safetensors).
    assert bundle.backbone_spec["weights"] == "backbone.safetensors" and bundle.learnt_backbone is not None
    assert bundle.identity.weight_source.startswith("random(seed=0, residual_scale=0.1)+learnt:")
    for plain in (create_backbone("random", device="cpu", seed=0), scaled):
        with pytest.raises(BundleError, match="backbone mismatch"):
            bundle.check_backbone(plain)


def test_a_residual_scale_is_refused_for_trained_weights_and_bad_values() -> None:
    with pytest.raises(BackboneError, match="only applies to --weights random"):
        create_backbone("tv_in1k", device="cpu", residual_scale=0.1)
    with pytest.raises(BackboneError, match="finite number >= 0"):
        create_backbone("random", device="cpu", residual_scale=-1.0)
