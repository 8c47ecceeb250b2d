"""The demo backbone's learnt part (issue 23): seeded random weights plus a small trained file, recorded by
the hash of the full result, trained only on allowed combinations, cached, shipped in a bundle, checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from acmr_core.bundle.bundle import LEARNT_BACKBONE_PART
from acmr_core.bundle.format import MANIFEST, load_bundle
from acmr_core.data import demo_world
from acmr_core.errors import BackboneError, BundleError
from acmr_core.features.backbone import create_backbone
from acmr_core.features.weights import save_learnt_parameters, state_dict_sha256
from acmr_core.pipelines import demo_backbone
from acmr_core.pipelines.backbone_trainer import BackboneTrainer
from acmr_core.pipelines.build import LabelledFeatures, build_bundle
from tests.test_bundle import _features, _tiny_catalog, rehash_manifest

TINY = demo_backbone.BackboneTraining(steps=2, batch_size=4, input_size=32)


@pytest.fixture(scope="module")
def learnt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("learnt-cache")
    return demo_backbone.learnt_backbone(TINY, demo_world.default_world(), device="cpu", cache_dir=cache,
                                         progress=False)  # fmt: skip


def test_training_combinations_leave_out_unseen_and_held_out_ones() -> None:
    world = demo_world.default_world()
    allowed = demo_world.backbone_training_combinations(world)
    unseen = [c.values for c in world.classes if not c.seen]
    held_out = demo_world.held_out_combinations(world)
    assert len(held_out) == demo_world.HELD_OUT_COMBINATIONS
    assert not any(values in allowed for values in unseen + held_out)
    assert all(c.values in allowed for c in world.classes if c.seen)
    assert len(allowed) == 360 - len(unseen) - len(held_out)


def test_learnt_file_holds_only_what_training_changed(learnt: Path) -> None:
    tensors = load_file(str(learnt))
    assert "conv1.weight" in tensors and "layer1.0.conv2.weight" in tensors  # the stem and layer1
    assert "layer2.0.conv2.weight" not in tensors and "layer3.5.conv2.weight" not in tensors
    assert "layer4.2.bn3.running_var" in tensors and "layer4.2.bn3.weight" in tensors  # every BatchNorm
    seeded = create_backbone("random", device="cpu", residual_scale=0.1, use_cache=False)
    state = seeded.model.state_dict()
    assert not torch.equal(tensors["layer1.0.conv2.weight"], state["layer1.0.conv2.weight"])  # it trained


def test_loading_puts_the_learnt_part_over_the_seed_and_hashes_the_whole(learnt: Path) -> None:
    backbone = create_backbone(str(learnt), device="cpu", use_cache=False)
    seeded = create_backbone("random", device="cpu", residual_scale=0.1, use_cache=False)
    expected = seeded.model.state_dict()
    expected.update(load_file(str(learnt)))
    assert backbone.identity.weights_sha256 == state_dict_sha256(expected)
    assert backbone.identity.weights_sha256 != seeded.identity.weights_sha256
    assert backbone.identity.transform["input_size"] == [3, TINY.input_size, TINY.input_size]
    assert "+learnt:" in backbone.identity.weight_source
    image = demo_world.default_world().render(0, demo_world.DEFAULT_EVAL_SEED, 0)
    assert tuple(backbone.preprocess(image).shape) == (3, TINY.input_size, TINY.input_size)
    first, again = backbone.features([image]), backbone.features([image])
    assert np.array_equal(first, again)  # evaluation mode: same image, same features


def test_a_second_build_takes_the_learnt_part_from_the_cache(learnt: Path, monkeypatch) -> None:
    def no_training(*_args, **_kwargs) -> None:
        raise AssertionError("trained again although the result is cached")

    monkeypatch.setattr(BackboneTrainer, "fit", no_training)
    again = demo_backbone.learnt_backbone(TINY, demo_world.default_world(), device="cpu",
                                          cache_dir=learnt.parent, progress=False)  # fmt: skip
    assert again == learnt


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.update({"layer9.weight": torch.zeros(2)}), "unknown layer9.weight"),
        (lambda t: t.update({"conv1.weight": torch.zeros(2, 2)}), "conv1.weight has another shape"),
    ],
)
def test_a_learnt_file_that_does_not_fit_is_refused(tmp_path: Path, edit, message: str) -> None:
    tensors = {"bn1.weight": torch.ones(64)}
    edit(tensors)
    path = save_learnt_parameters(tmp_path / "part.safetensors", tensors, model_name="resnet101", seed=0,
                                  residual_scale=0.1, input_size=64)  # fmt: skip
    with pytest.raises(BackboneError, match=message):
        create_backbone(str(path), device="cpu", use_cache=False)


def test_a_learnt_file_of_an_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    save_file({"bn1.weight": torch.ones(64)}, str(path), metadata={"format": "acmr-learnt-backbone",
                                                                  "format_version": "9"})  # fmt: skip
    with pytest.raises(BackboneError, match="version '9'"):
        create_backbone(str(path), device="cpu", use_cache=False)


@pytest.fixture(scope="module")
def learnt_bundle(learnt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    backbone = create_backbone(str(learnt), device="cpu", use_cache=False)
    catalog = _tiny_catalog()
    labels = np.repeat(catalog.seen_classes, 6)
    plot = np.repeat(np.arange(catalog.num_classes), 2)
    out = tmp_path_factory.mktemp("learnt-bundle") / "tiny"
    build_bundle(
        LabelledFeatures(_features(catalog, labels, 0), labels), catalog, out, identity=backbone.identity,
        plot_features=LabelledFeatures(_features(catalog, plot, 1), plot, tuple(f"i{i}" for i in plot)),
        epochs=2, device="cpu", projection="pca", progress=False, learnt_backbone=learnt,
        provenance={"backbone": {"weights": LEARNT_BACKBONE_PART, "model_name": "resnet101"}},
    )  # fmt: skip
    return out


def test_the_bundle_ships_its_learnt_part_and_makes_the_backbone(learnt_bundle: Path, learnt: Path) -> None:
    assert (learnt_bundle / LEARNT_BACKBONE_PART).read_bytes() == learnt.read_bytes()
    bundle = load_bundle(learnt_bundle, device="cpu")
    backbone = bundle.create_backbone(device="cpu", use_cache=False)
    assert backbone.identity.weights_sha256 == bundle.identity.weights_sha256


def test_a_corrupt_learnt_part_is_refused_at_load(learnt_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(learnt_bundle, copy)
    data = bytearray((copy / LEARNT_BACKBONE_PART).read_bytes())
    data[-1] ^= 0xFF
    (copy / LEARNT_BACKBONE_PART).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"backbone\.safetensors is corrupt"):
        load_bundle(copy, device="cpu")


def test_another_learnt_part_is_refused_as_a_backbone_mismatch(learnt_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(learnt_bundle, copy)
    tensors = load_file(str(copy / LEARNT_BACKBONE_PART))
    tensors["bn1.weight"] = tensors["bn1.weight"] + 0.5
    save_learnt_parameters(copy / LEARNT_BACKBONE_PART, tensors, model_name="resnet101", seed=0,
                           residual_scale=0.1, input_size=TINY.input_size)  # fmt: skip
    rehash_manifest(copy)
    bundle = load_bundle(copy, device="cpu")
    with pytest.raises(BundleError, match="backbone mismatch, weights_sha256 differs"):
        bundle.create_backbone(device="cpu", use_cache=False)
    assert (copy / MANIFEST).is_file()


def test_a_bundle_naming_its_own_part_without_it_is_refused(learnt_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(learnt_bundle, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["files"][LEARNT_BACKBONE_PART]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    (copy / LEARNT_BACKBONE_PART).unlink()
    bundle = load_bundle(copy, device="cpu")
    with pytest.raises(BundleError, match="names its own backbone part, but has none"):
        bundle.create_backbone(device="cpu", use_cache=False)


def test_a_malformed_learnt_header_is_refused(tmp_path: Path) -> None:
    path = save_learnt_parameters(
        tmp_path / "odd.safetensors", {"bn1.weight": torch.ones(64)}, model_name="resnet101", seed=0,
        residual_scale=0.1, input_size=8,
    )  # fmt: skip
    with pytest.raises(BackboneError, match="malformed learnt-backbone header"):
        create_backbone(str(path), device="cpu", use_cache=False)
