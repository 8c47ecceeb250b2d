"""Honest confidence (issue 34): the temperature fit, its place in a bundle, and re-fitting a built bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.bundle.format import MANIFEST, load_bundle, verify_bundle
from acmr_core.errors import ACMRError, BundleError
from acmr_core.features.backbone import BackboneIdentity
from acmr_core.model.calibration import (
    apply_temperature,
    calibration_report,
    check_temperature,
    expected_calibration_error,
    fit_temperature,
)
from acmr_core.pipelines.build import LabelledFeatures, build_bundle
from acmr_core.pipelines.calibrate import recalibrate_bundle
from tests.test_bundle import _features as attribute_features
from tests.test_bundle import _tiny_catalog

IDENTITY = BackboneIdentity(
    model_name="resnet101",
    weight_source="random(seed=0)",
    weights_sha256="0" * 64,
    transform={"input_size": [3, 224, 224], "crop_pct": 0.875},
    feature_dim=256,
)


def _sampled(temperature: float, n: int = 4000, classes: int = 12, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Scores and labels drawn from ``softmax(scores / temperature)``: a model whose true temperature is
    known."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(scale=2.0, size=(n, classes))
    probabilities = torch.softmax(torch.as_tensor(scores / temperature), dim=1).numpy()
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return scores, labels


@pytest.mark.parametrize("truth", [0.2, 1.0, 3.0])
def test_the_fit_recovers_a_known_temperature(truth: float) -> None:
    scores, labels = _sampled(truth)
    assert fit_temperature(scores, labels) == pytest.approx(truth, rel=0.1)


def test_a_model_right_on_every_image_gets_a_finite_confident_temperature() -> None:
    scores = np.random.default_rng(1).normal(size=(500, 10))
    labels = scores.argmax(axis=1)  # separable: without smoothing the NLL falls forever as T -> 0
    temperature = fit_temperature(scores, labels)
    probabilities = torch.softmax(torch.as_tensor(scores / temperature), dim=1).numpy()
    confidence = float(probabilities.max(axis=1).mean())
    assert 0.95 < confidence < 1 - 1 / 5000  # confident, but not "certain" from 500 images
    assert temperature > 1e-3  # not the search's lower bound


def test_the_temperature_never_changes_the_ranking() -> None:
    scores = torch.randn(64, 9)
    for temperature in (0.05, 1.0, 20.0):
        assert torch.equal(apply_temperature(scores, temperature).argmax(1), scores.argmax(1))


def test_masked_classes_take_no_share_of_the_fit() -> None:
    scores, labels = _sampled(0.5, n=2000, classes=6, seed=3)
    masked = np.concatenate([scores, np.full((scores.shape[0], 4), -np.inf)], axis=1)
    assert fit_temperature(masked, labels) == pytest.approx(fit_temperature(scores, labels), rel=1e-3)


def test_ece_and_report_measure_what_they_say() -> None:
    labels = np.array([0, 1, 0, 1])
    right_and_sure = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(right_and_sure, labels) == 0.0
    half_wrong = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])  # 90 % sure, right half the time
    assert expected_calibration_error(half_wrong, labels) == pytest.approx(0.4)
    report = calibration_report(half_wrong, labels)
    assert report["top1"] == 0.5 and report["median_right_probability"] == pytest.approx(0.9)
    assert report["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.1)) / 2)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "warm", None, 1e9])
def test_a_bad_temperature_is_refused_in_one_line(bad: object) -> None:
    with pytest.raises(ACMRError, match="temperature must be") as caught:
        check_temperature(bad)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------------- bundles


def _features(catalog: ClassCatalog, labels: np.ndarray, seed: int) -> np.ndarray:
    return attribute_features(catalog, labels, seed, dim=IDENTITY.feature_dim)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    catalog = _tiny_catalog(seen_classes=5)
    labels = np.repeat(catalog.seen_classes, 8)
    out = tmp_path_factory.mktemp("calibrated") / "tiny"
    build_bundle(
        LabelledFeatures(_features(catalog, labels, 0), labels), catalog, out, identity=IDENTITY, epochs=2,
        device="cpu", projection="pca", progress=False,
    )  # fmt: skip
    return out


def test_building_a_bundle_fits_and_keeps_a_temperature(built: Path) -> None:
    meta = json.loads((built / "classifier.json").read_text())
    assert meta["temperature"] == meta["selection"]["temperature"]  # fitted on the validation split
    fits = meta["selection"]["temperature_fits"]
    assert set(fits) == {"seen", "unseen", "pooled"} and all(value > 0 for value in fits.values())
    # The validation may soften the probabilities, never sharpen them (its unseen part is optimistic).
    assert meta["temperature"] == max(1.0, fits["seen"], fits["unseen"])
    bundle = load_bundle(built, device="cpu")
    assert bundle.trained.temperature == pytest.approx(meta["temperature"])


def test_a_temperature_changes_the_probabilities_but_never_the_answer(built: Path) -> None:
    bundle = load_bundle(built, device="cpu")
    features = _features(bundle.catalog, np.arange(bundle.catalog.num_classes), 5)
    plain = bundle.probabilities(features)
    for temperature in (0.1, 3.0):
        bundle.trained.temperature = temperature
        changed = bundle.probabilities(features)
        assert not np.allclose(changed, plain)
        assert np.array_equal(changed.argmax(1), plain.argmax(1))
        for gamma in (-2.0, 2.0):  # and gamma moves the answers exactly as at T = 1
            bundle.trained.temperature = 1.0
            at_one = bundle.probabilities(features, gamma=gamma).argmax(1)
            bundle.trained.temperature = temperature
            assert np.array_equal(bundle.probabilities(features, gamma=gamma).argmax(1), at_one)


def test_a_bundle_without_a_temperature_loads_with_one(built: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(built, old)
    meta = json.loads((old / "classifier.json").read_text())
    del meta["temperature"]
    _rewrite(old, "classifier.json", meta)
    assert load_bundle(old, device="cpu").trained.temperature == 1.0


def test_a_bundle_with_a_bad_temperature_is_refused(built: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    meta = json.loads((broken / "classifier.json").read_text())
    meta["temperature"] = -2
    _rewrite(broken, "classifier.json", meta)
    with pytest.raises(BundleError, match=r"classifier.json temperature must be") as caught:
        load_bundle(broken, device="cpu")
    assert "\n" not in str(caught.value)


def test_recalibrating_a_built_bundle_keeps_it_valid_and_its_answers(built: Path, tmp_path: Path) -> None:
    target = tmp_path / "recalibrated"
    shutil.copytree(built, target)
    before = load_bundle(target, device="cpu")
    labels = np.repeat(np.arange(before.catalog.num_classes), 6)
    features = _features(before.catalog, labels, 9)
    fitted = recalibrate_bundle(target, features, labels, {"images": "test features", "seed": 9})
    verify_bundle(target)  # the manifest records the new classifier.json
    after = load_bundle(target, device="cpu")
    assert after.trained.temperature == pytest.approx(fitted["temperature"])
    assert np.array_equal(after.probabilities(features).argmax(1), before.probabilities(features).argmax(1))
    assert fitted["after"]["nll"] <= fitted["before"]["nll"] + 1e-9
    meta = json.loads((target / "classifier.json").read_text())
    calibration = meta["selection"]["calibration"]
    assert calibration["seed"] == 9 and calibration["before"]["images"] == labels.size
    assert after.trained.selection["calibration"]["temperature"] == meta["temperature"]


def _rewrite(directory: Path, part: str, document: dict) -> None:
    """Edit a part and keep the manifest's record of it true (a consistent bundle)."""
    import hashlib

    data = json.dumps(document).encode()
    (directory / part).write_bytes(data)
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["files"][part] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_a_saved_model_keeps_its_temperature_and_an_older_one_loads_with_one(
    built: Path, tmp_path: Path
) -> None:
    from acmr_core.model.saved_model import CONFIG_FILE, load_trained, save_trained

    trained = load_bundle(built, device="cpu").trained
    trained.temperature = 0.37
    folder = save_trained(tmp_path / "model", trained)  # what `acmr train` writes and the bootstrap bundles
    assert load_trained(folder).temperature == pytest.approx(0.37)
    config = json.loads((folder / CONFIG_FILE).read_text())
    del config["temperature"]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    assert load_trained(folder).temperature == 1.0
