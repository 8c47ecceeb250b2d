"""Feature extraction: image folders and list files → features file (+ res101.mat), bad images skipped."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from acmr_core.cli import main
from acmr_core.errors import BackboneError, DataError
from acmr_core.features.backbone import Backbone, BackboneIdentity
from acmr_core.features.extract import (
    FeatureSet,
    extract_paths,
    find_images,
    load_features,
    read_image_list,
    save_features,
    write_res101_mat,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone(random_backbone: Backbone) -> Backbone:
    return random_backbone


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two classes, three good images in assorted formats, one truncated JPEG and one non-image file."""
    root = tmp_path / "images"
    (root / "apple").mkdir(parents=True)
    (root / "banana").mkdir()
    Image.new("RGB", (64, 48), (200, 20, 20)).save(root / "apple" / "a1.png")
    Image.new("RGBA", (40, 40), (180, 40, 40, 255)).save(root / "apple" / "a2.png")
    Image.new("L", (50, 60), 220).save(root / "banana" / "b1.jpg")
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(
        0, 256, size=(64, 64, 3), dtype=np.uint8
    )  # seeded, unlike PIL's
    Image.fromarray(noise).save(buffer, "JPEG")
    (root / "apple" / "corrupt.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "banana" / "README.txt").write_text("not an image, ignored by extension")
    return root


# ------------------------------------------------------------------------------------------------ end to end


def test_acmr_extract_folder_end_to_end(
    image_folder: Path,
    tmp_path: Path,
    backbone: Backbone,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out, mat = tmp_path / "out" / "features.safetensors", tmp_path / "out" / "res101.mat"
    arguments = ["extract", "--images", str(image_folder), "--weights", "random", "--out", str(out)]
    arguments += ["--res101-mat", str(mat), "--batch-size", "2", "--workers", "1", "--device", "cpu"]
    with caplog.at_level(logging.WARNING):
        assert main([*arguments, "--no-progress"]) == 0

    summary = capsys.readouterr().out
    assert "extracted 3 of 4 images (2 classes, 2048-d" in summary
    assert "skipped 1 unreadable image;" in summary
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(
        "apple/corrupt.jpg" in message and "the image is truncated or corrupt" in message
        for message in warnings
    )

    features = load_features(out, expected=backbone.identity)
    assert features.features.shape == (3, 2048) and features.features.dtype == np.float32
    assert features.image_paths == ["apple/a1.png", "apple/a2.png", "banana/b1.jpg"]
    assert features.class_names == ["apple", "banana"]
    assert features.labels.tolist() == [0, 0, 1]
    assert features.identity == backbone.identity
    assert [entry["path"] for entry in features.skipped] == ["apple/corrupt.jpg"]
    # The DataLoader path gives the features Backbone.features gives.
    direct = backbone.features([Image.open(image_folder / "banana" / "b1.jpg")])
    np.testing.assert_allclose(features.features[2], direct[0], rtol=1e-4, atol=1e-5)

    content = scipy.io.loadmat(mat)
    assert content["features"].shape == (2048, 3)
    np.testing.assert_array_equal(content["features"].T, features.features)
    assert content["labels"].shape == (3, 1) and content["labels"].ravel().tolist() == [1, 1, 2]
    assert content["image_files"].shape == (3, 1)
    assert [str(cell[0][0]) for cell in content["image_files"]] == features.image_paths


def test_extract_paths_reports_failures_by_index(backbone: Backbone, image_folder: Path) -> None:
    paths = [
        image_folder / "apple" / "corrupt.jpg",
        image_folder / "apple" / "a1.png",
        image_folder / "nope.png",
    ]
    features, kept, failures = extract_paths(backbone, paths, progress=False)
    assert features.shape == (1, 2048)
    assert kept.tolist() == [1]
    assert [index for index, _ in failures] == [0, 2]
    assert "truncated or corrupt" in failures[0][1] and "file not found" in failures[1][1]


def test_folder_where_nothing_is_readable_is_an_error(backbone: Backbone, tmp_path: Path) -> None:
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "empty.png").write_bytes(b"")
    from acmr_core.features.extract import extract_features

    with pytest.raises(DataError, match="none of the 1 images"):
        extract_features(backbone, find_images(tmp_path), progress=False)


# ------------------------------------------------------------------------------------------------ inputs


def test_folder_scan_labels_by_subfolder(image_folder: Path) -> None:
    (image_folder / "loose.png").write_bytes((image_folder / "apple" / "a1.png").read_bytes())
    found = find_images(image_folder)
    assert found.paths == ["apple/a1.png", "apple/a2.png", "apple/corrupt.jpg", "banana/b1.jpg", "loose.png"]
    assert found.labels.tolist() == [0, 0, 0, 1, -1]
    assert found.class_names == ["apple", "banana"]


def test_list_file_parsing(tmp_path: Path) -> None:
    (tmp_path / "with space.png").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# comment\n\nimg/x.jpg 10\nimg/y.jpg 2\nwith space.png\nimg/z jpg\t9\nimg/w.jpg\n", encoding="utf-8"
    )
    found = read_image_list(listing)
    assert found.root == tmp_path
    assert found.paths == ["img/x.jpg", "img/y.jpg", "with space.png", "img/z jpg", "img/w.jpg"]
    assert found.class_names == ["2", "9", "10"]  # numeric labels sort as numbers
    assert found.labels.tolist() == [2, 0, -1, 1, -1]
    assert find_images(listing, root=tmp_path / "elsewhere").root == tmp_path / "elsewhere"


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder or list file"):
        find_images(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_images(tmp_path / "empty")
    listing = tmp_path / "list.txt"
    listing.write_text("# only a comment\n")
    with pytest.raises(DataError, match="names no images"):
        find_images(listing)


def test_cli_bad_arguments_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "--images", str(tmp_path / "x"), "--weights", "random", "--out", "f.npz"]) == 2
    assert capsys.readouterr().err.strip() == (
        "acmr extract: error: --out f.npz: the features file must end in .safetensors"
    )
    assert main(["extract", "--images", str(tmp_path / "x"), "--out", str(tmp_path / "f.safetensors")]) == 2
    assert "no such folder or list file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ files


def synthetic_set(identity: BackboneIdentity, labels: list[int]) -> FeatureSet:
    rng = np.random.default_rng(0)
    return FeatureSet(
        features=rng.random((len(labels), 2048), dtype=np.float32),
        labels=np.array(labels),
        image_paths=[f"c/{index}.jpg" for index in range(len(labels))],
        class_names=["c0", "c1"],
        identity=identity,
        skipped=[{"path": "c/bad.jpg", "reason": "truncated"}],
    )


@pytest.fixture
def identity() -> BackboneIdentity:
    transform = {"input_size": [3, 224, 224], "crop_pct": 0.875}
    return BackboneIdentity("resnet101", "random(seed=0)", "ab" * 32, transform, 2048)


def test_features_file_round_trip(identity: BackboneIdentity, tmp_path: Path) -> None:
    original = synthetic_set(identity, [0, 1, 1, -1])
    path = save_features(tmp_path / "f.safetensors", original)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file
    assert path.stat().st_mode & 0o777 == 0o644
    loaded = load_features(path, expected=identity)
    np.testing.assert_array_equal(loaded.features, original.features)
    assert loaded.labels.tolist() == [0, 1, 1, -1]
    assert (loaded.image_paths, loaded.class_names, loaded.skipped) == (
        original.image_paths,
        original.class_names,
        original.skipped,
    )
    assert loaded.identity == identity


def test_features_from_another_backbone_are_refused(identity: BackboneIdentity, tmp_path: Path) -> None:
    path = save_features(tmp_path / "f.safetensors", synthetic_set(identity, [0, 1]))
    other = BackboneIdentity.from_dict({**identity.to_dict(), "weights_sha256": "cd" * 32})
    with pytest.raises(BackboneError, match=r"f\.safetensors: backbone mismatch, weights_sha256 differs"):
        load_features(path, expected=other)


def test_damaged_features_files_are_refused(identity: BackboneIdentity, tmp_path: Path) -> None:
    path = save_features(tmp_path / "f.safetensors", synthetic_set(identity, [0, 1]))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="not a readable features file"):
        load_features(truncated)
    with pytest.raises(DataError, match="features file not found"):
        load_features(tmp_path / "absent.safetensors")

    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weights": np.zeros(3, dtype=np.float32)}, str(foreign))
    with pytest.raises(DataError, match="not an acmr features file"):
        load_features(foreign)

    bad_metadata = tmp_path / "bad_meta.safetensors"
    save_file(
        {"features": np.zeros((2, 4), dtype=np.float32), "labels": np.zeros(2, dtype=np.int64)},
        str(bad_metadata),
        metadata={"acmr_features": "1", "backbone": json.dumps(identity.to_dict()), "image_paths": "[1"},
    )
    with pytest.raises(DataError, match="damaged metadata"):
        load_features(bad_metadata)


def test_inconsistent_feature_sets_are_refused(identity: BackboneIdentity) -> None:
    with pytest.raises(DataError, match="inconsistent feature set"):
        FeatureSet(np.zeros((3, 2048)), np.zeros(2), ["a", "b"], ["c"], identity)
    with pytest.raises(DataError, match="labels fall outside its 2 classes"):
        synthetic_set(identity, [0, 2])


def test_res101_mat_needs_every_label(identity: BackboneIdentity, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="1 have none"):
        write_res101_mat(tmp_path / "res101.mat", synthetic_set(identity, [0, -1]))
    assert not (tmp_path / "res101.mat").exists()
