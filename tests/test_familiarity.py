"""The "outside my world" notice: familiarity statistics, their calibration, storage in a bundle, and the
shipped demo bundle flagging a real photograph (scikit-image's) but not a fresh render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from acmr_core.bundle.familiarity import Familiarity, fit_familiarity
from acmr_core.bundle.format import FORMAT_VERSION, load_bundle
from acmr_core.cli import main
from acmr_core.data import demo_world
from acmr_core.errors import BundleError
from acmr_core.pipelines.predict import predict_images
from tests.test_bundle import rehash_manifest
from tests.test_service import DEMO_BUNDLE

# ---- the statistics on plain arrays ------------------------------------------------------------------------


def _clustered(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    """Two well-separated clusters (like light and dark renders), positive like pooled ReLU features."""
    centres = np.stack([np.full(dim, 1.0), np.full(dim, 3.0)])
    return centres[rng.integers(0, 2, size=n)] + rng.normal(scale=0.3, size=(n, dim))


def test_held_out_images_stay_under_the_threshold_and_strangers_go_beyond() -> None:
    rng = np.random.default_rng(0)
    familiarity = fit_familiarity(_clustered(rng, 400), seed=0)
    like_training = familiarity.assess(_clustered(np.random.default_rng(1), 200))
    assert np.mean([flag for _, flag in like_training]) <= 0.05
    assert all(0.5 <= score <= 1.0 for score, flag in like_training if not flag)
    strangers = familiarity.assess(np.random.default_rng(2).normal(loc=8.0, scale=2.0, size=(20, 32)))
    assert all(flag and score < 0.5 for score, flag in strangers)
    assert familiarity.calibration["held_out_images"] == 80
    assert familiarity.calibration["held_out_flagged"] <= 0.05


def test_score_is_one_half_exactly_at_the_threshold() -> None:
    familiarity = Familiarity(mean=np.zeros(4), scale=np.ones(4), threshold=2.0)
    at_threshold = np.full((1, 4), 2.0)  # RMS z-score 2
    assert familiarity.distances(at_threshold)[0] == pytest.approx(2.0)
    assert familiarity.assess(at_threshold) == [(pytest.approx(0.5), False)]
    assert familiarity.assess(at_threshold * 1.01)[0][1] is True


def test_pixel_measure_flags_a_textured_image_among_flat_renders() -> None:
    from PIL import Image

    from acmr_core.bundle.familiarity import pixel_histogram

    world = demo_world.default_world()
    renders = [world.render(c, seed=0, index=i) for c in range(6) for i in range(12)]
    features = np.random.default_rng(5).normal(size=(len(renders), 8))
    familiarity = fit_familiarity(features, seed=0, pixel_histograms=[pixel_histogram(r) for r in renders])
    assert familiarity.uses_pixels and familiarity.calibration["pixels"]["held_out_images"] == 14
    noise = Image.fromarray(np.random.default_rng(6).integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    fresh = world.render(2, seed=demo_world.DEFAULT_EVAL_SEED, index=0)
    typical = np.zeros((2, 8))  # the feature measure alone finds both typical
    (noise_score, noise_flag), (fresh_score, fresh_flag) = familiarity.assess(typical, [noise, fresh])
    assert noise_flag and noise_score < 0.5 and not fresh_flag and fresh_score >= 0.5
    assert familiarity.assess(typical)[0][1] is False  # without images: the feature measure only


def test_pixel_statistics_of_an_older_bundle_keep_their_colour_levels() -> None:
    # Bundles built before the finer quantisation stored 8 levels per channel: the bin count says so, and
    # new images are binned the same way, so the old statistics still flag noise and pass a render.
    from PIL import Image

    from acmr_core.bundle.familiarity import colour_levels_of, pixel_histogram

    world = demo_world.default_world()
    renders = [world.render(c, seed=0, index=i) for c in range(6) for i in range(6)]
    old = fit_familiarity(
        np.random.default_rng(5).normal(size=(len(renders), 2)),
        seed=0,
        pixel_histograms=[pixel_histogram(r, 8) for r in renders],
    )
    assert old.rare_bins.size == 8**3 * 4 and colour_levels_of(old.rare_bins.size) == 8
    assert old.pixel_colour_levels == 8
    noise = Image.fromarray(np.random.default_rng(6).integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    fresh = world.render(2, seed=demo_world.DEFAULT_EVAL_SEED, index=0)
    flags = [flag for _, flag in old.assess(np.zeros((2, 2)), [noise, fresh])]
    assert flags == [True, False]
    with pytest.raises(BundleError, match="bins"):
        Familiarity(np.zeros(2), np.ones(2), 1.0, rare_bins=np.zeros(1000, bool), pixel_threshold=0.1)


def test_fitting_is_deterministic_and_refuses_too_few_images() -> None:
    features = _clustered(np.random.default_rng(3), 50)
    first, second = fit_familiarity(features, seed=4), fit_familiarity(features, seed=4)
    assert first.threshold == second.threshold and np.array_equal(first.mean, second.mean)
    with pytest.raises(BundleError, match=">= 4 training images"):
        fit_familiarity(features[:3])


def test_bad_statistics_and_features_are_refused() -> None:
    with pytest.raises(BundleError, match="threshold"):
        Familiarity(mean=np.zeros(3), scale=np.ones(3), threshold=0.0)
    with pytest.raises(BundleError, match="non-positive"):
        Familiarity(mean=np.zeros(3), scale=np.zeros(3), threshold=1.0)
    with pytest.raises(BundleError, match="expects"):
        Familiarity(mean=np.zeros(3), scale=np.ones(3), threshold=1.0).distances(np.zeros((2, 5)))


# ---- storage in a bundle (the shipped demo bundle, copied) -------------------------------------------------


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "demo-copy"
    shutil.copytree(DEMO_BUNDLE, copy)
    return copy


def test_bundle_stores_statistics_calibrated_on_held_out_training_images() -> None:
    bundle = load_bundle(DEMO_BUNDLE, device="cpu")
    calibration = bundle.familiarity.calibration
    assert (
        calibration["held_out_images"] > 0 and calibration["fitted_images"] > calibration["held_out_images"]
    )
    assert calibration["fitted_images"] + calibration["held_out_images"] == bundle.latent.train_labels.size
    assert bundle.familiarity.feature_dim == bundle.identity.feature_dim


def test_a_bundle_without_the_familiarity_part_is_refused(bundle_copy: Path) -> None:
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"]["familiarity.json"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"does not list familiarity\.json"):
        load_bundle(bundle_copy, device="cpu")


def test_a_version_1_bundle_is_refused_with_a_request_to_rebuild(bundle_copy: Path) -> None:
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 1
    manifest_path.write_text(json.dumps(manifest))
    assert FORMAT_VERSION == 2
    with pytest.raises(BundleError, match=r"format version 1.*rebuild"):
        load_bundle(bundle_copy, device="cpu")


def test_a_malformed_threshold_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "familiarity.json").write_text(json.dumps({"threshold": "high"}))
    rehash_manifest(bundle_copy)
    with pytest.raises(BundleError, match="numeric 'threshold'"):
        load_bundle(bundle_copy, device="cpu")


# ---- a real photograph vs a fresh render, through the shipped bundle and `acmr predict --json` -----------


@pytest.fixture(scope="module")
def photo_and_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the real photographs")
    from PIL import Image

    folder = tmp_path_factory.mktemp("familiarity")
    photo = folder / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    render = folder / "render.png"
    world = demo_world.default_world()
    # A seed no bundle is built with: a fresh image of the demo world.
    world.render(int(world.seen_classes[0]), seed=demo_world.DEFAULT_EVAL_SEED + 1, index=0).save(render)
    return photo, render


def test_a_real_photo_is_flagged_and_a_fresh_render_is_not(
    photo_and_render: tuple[Path, Path], one_torch_thread: None
) -> None:
    bundle = load_bundle(DEMO_BUNDLE, device="cpu")
    photo, render = predict_images(bundle, list(photo_and_render), top_k=1, device="cpu")
    assert photo["unfamiliar"] is True and photo["familiarity"] < 0.5
    assert render["unfamiliar"] is False and render["familiarity"] >= 0.5


def test_predict_json_records_carry_familiarity(
    capsys: pytest.CaptureFixture[str], photo_and_render: tuple[Path, Path], one_torch_thread: None
) -> None:
    code = main(
        ["predict", "--bundle", str(DEMO_BUNDLE), "--json", "--top-k", "1", *map(str, photo_and_render)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    photo, render = json.loads(out)
    assert (photo["unfamiliar"], render["unfamiliar"]) == (True, False)
    assert 0.0 < photo["familiarity"] < render["familiarity"] <= 1.0


def test_predict_text_output_shows_the_notice_for_a_photo_only(
    capsys: pytest.CaptureFixture[str], photo_and_render: tuple[Path, Path], one_torch_thread: None
) -> None:
    code = main(["predict", "--bundle", str(DEMO_BUNDLE), "--top-k", "1", *map(str, photo_and_render)])
    out, _ = capsys.readouterr()
    assert code == 0
    photo_part, render_part = out.split(str(photo_and_render[1]))
    assert "unlike anything this model was trained on" in photo_part
    assert "unlike anything" not in render_part
