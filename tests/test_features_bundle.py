"""`acmr bundle --run` (issue 36): a bundle from `acmr train`'s output on synthetic CUB and AWA2 in the
res101.mat layout, the service it serves, and its one-line refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from acmr_core.bundle.format import load_bundle
from acmr_core.cli import main
from acmr_core.errors import ACMRError, BundleError, ImageError, UserClassError
from acmr_core.serving.service import StudioService
from acmr_core.serving.test_images import SplitImages
from acmr_core.training.metrics import per_class_accuracy
from tests.features_fixtures import FeaturesRun, features_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["CUB", "AWA2"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FeaturesRun:
    return features_run(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def service(built: FeaturesRun, tmp_path_factory: pytest.TempPathFactory) -> StudioService:
    return StudioService.open(built.bundle, device="cpu", user_classes_dir=tmp_path_factory.mktemp("classes"))


def test_the_bundle_holds_every_test_image_the_catalog_and_reads_features_only(built: FeaturesRun) -> None:
    data = built.data()
    bundle = load_bundle(built.bundle, device="cpu")
    assert (
        bundle.features_only
        and json.loads((built.bundle / "manifest.json").read_text())["inputs"] == "features"
    )
    # Every test image, once, with its own class and its res101.mat file name.
    test = np.sort(np.concatenate([data.test_seen, data.test_unseen]))
    assert bundle.latent.visual_labels.tolist() == data.labels[test].tolist()
    assert list(bundle.latent.image_ids) == [data.image_files[i] for i in test]
    # The catalog: the xlsa17 classes (readable names) and attribute names, seen = the trainval classes.
    assert bundle.catalog.num_classes == len(data.class_names)
    assert list(bundle.catalog.attribute_names) == data.attribute_names
    assert not any(name.startswith("attribute_") for name in bundle.catalog.attribute_names)
    assert np.array_equal(bundle.catalog.seen_classes, data.seen_classes)
    with pytest.raises(BundleError, match="reads precomputed image features"):
        bundle.create_backbone(device="cpu")


def test_the_results_are_the_models_own_and_match_metrics_json(built: FeaturesRun) -> None:
    data = built.data()
    bundle = load_bundle(built.bundle, device="cpu")
    results = bundle.results
    metrics = json.loads((built.run / "metrics.json").read_text())["per_seed"][0]
    # Recomputed here from the features: the model's answers, per class.
    test = np.sort(np.concatenate([data.test_seen, data.test_unseen]))
    predicted = bundle.trained.predict(data.features[test])
    labels = data.labels[test]
    assert results["images"]["predicted"] == predicted.tolist()
    rows = {row["name"]: row for row in results["classes"]}
    assert len(rows) == np.unique(labels).size
    for index in np.unique(labels):
        row = rows[bundle.catalog.names[index]]
        own = predicted[labels == index]
        assert row["images"] == own.size and row["correct"] == int((own == index).sum())
        assert row["kind"] == ("seen" if bundle.catalog.seen_mask[index] else "unseen")
        wrong = own[own != index]
        if wrong.size:  # the first confusion is the most frequent wrong answer
            top = row["confusions"][0]
            assert top["images"] == np.bincount(wrong).max()
            assert bundle.catalog.index_of(top["name"]) in np.flatnonzero(np.bincount(wrong) == top["images"])
    seen = bundle.catalog.seen_mask[labels]
    u = per_class_accuracy(labels[~seen], predicted[~seen], bundle.catalog.unseen_classes)
    s = per_class_accuracy(labels[seen], predicted[seen], bundle.catalog.seen_classes)
    assert results["metrics"]["U"] == pytest.approx(u) and results["metrics"]["S"] == pytest.approx(s)
    # The figures of metrics.json for the same seed (the same model on the same images).
    assert results["metrics"]["U"] == pytest.approx(metrics["U"], abs=0.5)
    assert results["metrics"]["S"] == pytest.approx(metrics["S"], abs=0.5)


def test_the_service_refuses_images_and_answers_a_picked_test_image(service: StudioService) -> None:
    assert service.features_only and service.backbone is None
    image = Path(__file__).resolve().parents[1] / "assets" / "examples"
    with pytest.raises(ImageError, match=r"^this model reads precomputed image features .*pick a test image"):
        service.predict(next(image.glob("*.png")))
    results = service.results()
    row = results["classes"][0]
    picked = service.test_images(row["name"])
    assert len(picked) == row["images"] and all(item.class_name == row["name"] for item in picked)
    answer = service.predict_test_image(picked[0].position, top_k=3)
    assert answer.ranked[0].name == picked[0].predicted  # the answer the results counted
    assert answer.familiarity == pytest.approx(results["images"]["familiarity"][picked[0].position], abs=1e-4)
    with pytest.raises(UserClassError, match="pick 0 to"):
        service.pick_test_image(row["name"], len(picked))


def test_a_draft_lists_its_nearest_test_images(service: StudioService) -> None:
    attributes = service.attribute_names
    preview = service.preview_class({attributes[0]: 1.0, attributes[-1]: 1.0})
    assert len(preview.images) == 5
    distances = [item.distance for item in preview.images]
    assert distances == sorted(distances)
    unit = np.zeros((1, len(attributes)), np.float32)
    unit[0, [0, -1]] = 1.0
    builder = service.reads.builder
    draft = builder.semantic_latents(unit * builder.scale)
    every = np.linalg.norm(service.bundle.latent.visual - draft, axis=1)
    assert distances == pytest.approx(np.sort(every)[:5].tolist(), rel=1e-5)


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_runs_are_refused_in_one_line(
    built: FeaturesRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "bundle")
    assert re.search(
        r"has no metrics\.json", _error_line(capsys, ["bundle", "--run", str(tmp_path), "--out", out])
    )
    run = ["bundle", "--run", str(built.run), "--out", out]
    assert "no model of seed 7" in _error_line(capsys, [*run, "--seed", "7"])
    assert "leave out --features" in _error_line(capsys, [*run, "--classes", str(tmp_path / "c.json")])
    # The right dataset name, other features: the same files renamed would pass, so change them.
    from acmr_core.data.synthetic import write_synthetic_xlsa17

    write_synthetic_xlsa17(tmp_path / "shifted", built.dataset, seed=5, feature_dim=16, images_per_class=4)
    assert "reads 32-d features, the data has 16-d" in _error_line(
        capsys, [*run, "--data-root", str(tmp_path / "shifted")]
    )
    assert not Path(out).exists()


def test_an_older_bundle_still_loads_reads_images_and_offers_no_test_images() -> None:
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "demo-world"
    assert "inputs" not in json.loads((shipped / "manifest.json").read_text())  # written before the key
    bundle = load_bundle(shipped, device="cpu")
    assert not bundle.features_only and bundle.results is None
    images = SplitImages(bundle)
    with pytest.raises(UserClassError, match="no test images to pick"):
        images.of_class(bundle.catalog.names[0])
    with pytest.raises(ACMRError, match="no per-class test results"):
        images.results()
    assert images.nearest(bundle.latent.semantic[0]) == []
