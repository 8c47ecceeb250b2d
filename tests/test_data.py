"""xlsa17 loading, its one-line errors, the scaler, and the validation split (never on test images)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from acmr_core.data.synthetic import write_synthetic_xlsa17
from acmr_core.data.xlsa17 import FeatureScaler, holdout_split, load_xlsa17
from acmr_core.errors import DataError


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xlsa17")
    write_synthetic_xlsa17(root, "TINY", feature_dim=8, images_per_class=10, xlsa17_dir=root / "none")
    return root


def test_loads_synthetic_layout(tiny_root: Path) -> None:
    data = load_xlsa17(tiny_root, "TINY")
    n = data.labels.size
    assert data.features.shape == (n, 8) and data.features.dtype == np.float32
    assert data.attributes.shape == (20, 16) and len(data.class_names) == 20
    assert data.labels.min() >= 0 and data.labels.max() < 20
    parts = np.concatenate([data.trainval, data.test_seen, data.test_unseen])
    assert np.array_equal(np.sort(parts), np.arange(n))
    assert len(data.image_files) == n
    assert np.intersect1d(data.seen_classes, data.unseen_classes).size == 0
    assert data.val_split_source == "locs"


def test_validation_split_uses_trainval_only(tiny_root: Path) -> None:
    data = load_xlsa17(tiny_root, "TINY")
    assert data.has_validation_split
    assert np.isin(data.train, data.trainval).all() and np.isin(data.val, data.trainval).all()
    assert not np.isin(np.concatenate([data.train, data.val]), data.test_seen).any()
    assert np.intersect1d(data.labels[data.train], data.labels[data.val]).size == 0
    # The synthetic locs follow xlsa17: train_loc and val_loc together cover trainval AND test_seen.
    mat = scipy.io.loadmat(str(tiny_root / "TINY" / "att_splits.mat"))
    covered = np.concatenate([mat["train_loc"].ravel(), mat["val_loc"].ravel()]) - 1
    assert np.array_equal(np.sort(covered), np.sort(np.concatenate([data.trainval, data.test_seen])))
    assert np.array_equal(np.sort(np.concatenate([data.train, data.val])), np.sort(data.trainval))


def _write_features_for_real_splits(folder: Path, real: Path, labels: np.ndarray) -> None:
    for name in ("att_splits.mat", "trainclasses1.txt", "valclasses1.txt"):
        shutil.copyfile(real / name, folder / name)
    features = np.random.default_rng(0).random((3, labels.size)).astype(np.float32)
    scipy.io.savemat(str(folder / "res101.mat"), {"features": features, "labels": labels.reshape(-1, 1) + 1})


def test_awa2_validation_split_from_real_locs(tmp_path: Path, xlsa17_dir: Path) -> None:
    real = xlsa17_dir / "AWA2"
    rows = np.loadtxt(real / "image_class_labels.txt", dtype=np.int64)
    folder = tmp_path / "AWA2"
    folder.mkdir()
    _write_features_for_real_splits(folder, real, rows[:, 1] - 1)
    data = load_xlsa17(tmp_path, "AWA2")
    assert data.val_split_source == "locs"
    assert not np.isin(np.concatenate([data.train, data.val]), data.test_seen).any()
    names = np.array(data.class_names)
    assert set(names[np.unique(data.labels[data.train])]) == set(
        (real / "trainclasses1.txt").read_text().split()
    )
    assert set(names[np.unique(data.labels[data.val])]) == set((real / "valclasses1.txt").read_text().split())
    assert data.train.size + data.val.size == data.trainval.size == 23527


def test_cub_falls_back_to_class_files(tmp_path: Path, xlsa17_dir: Path) -> None:
    real = xlsa17_dir / "CUB"
    mat = scipy.io.loadmat(str(real / "att_splits.mat"))
    assert "train_loc" not in mat  # the situation the fallback exists for
    names = [line.strip() for line in (real / "allclasses.txt").read_text().splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(names)}
    seen = np.array([index[n] for n in (real / "trainvalclasses.txt").read_text().split()])
    unseen = np.array([index[n] for n in (real / "testclasses.txt").read_text().split()])
    rng = np.random.default_rng(0)
    labels = np.zeros(11788, dtype=np.int64)
    seen_locs = np.concatenate([mat["trainval_loc"].ravel(), mat["test_seen_loc"].ravel()]) - 1
    labels[seen_locs] = rng.choice(seen, seen_locs.size)
    labels[mat["test_unseen_loc"].ravel() - 1] = rng.choice(unseen, mat["test_unseen_loc"].size)
    folder = tmp_path / "CUB"
    folder.mkdir()
    _write_features_for_real_splits(folder, real, labels)
    data = load_xlsa17(tmp_path, "CUB")
    assert data.val_split_source == "class-files"
    val_names = set((real / "valclasses1.txt").read_text().split())
    assert {data.class_names[c] for c in np.unique(data.labels[data.val])} == val_names
    assert len(np.unique(data.labels[data.train])) == 100
    assert np.isin(data.train, data.trainval).all() and np.isin(data.val, data.trainval).all()


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_folder_and_files(tmp_path: Path, tiny_root: Path) -> None:
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path / "nowhere", "CUB")
    assert "does not exist" in _one_line(error)
    folder = tmp_path / "CUB"
    shutil.copytree(tiny_root / "TINY", folder)
    (folder / "res101.mat").unlink()
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path, "CUB")
    assert "res101.mat not found" in _one_line(error)


def test_corrupt_missing_key_and_shape_errors(tmp_path: Path, tiny_root: Path) -> None:
    folder = tmp_path / "X"
    shutil.copytree(tiny_root / "TINY", folder)
    (folder / "res101.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path, "X")
    assert "cannot be read" in _one_line(error)

    scipy.io.savemat(str(folder / "res101.mat"), {"features": np.zeros((4, 3)), "labels": np.ones((5, 1))})
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path, "X")
    assert "shape" in _one_line(error)

    scipy.io.savemat(str(folder / "res101.mat"), {"labels": np.ones((5, 1))})
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path, "X")
    assert "'features'" in _one_line(error)

    scipy.io.savemat(
        str(folder / "res101.mat"), {"features": np.zeros((4, 5)), "labels": np.full((5, 1), 99)}
    )
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path, "X")
    assert "1-based" in _one_line(error)


def _with_edited_splits(tmp_path: Path, tiny_root: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of the tiny dataset as ``tmp_path/X`` whose att_splits.mat went through ``edit``."""
    folder = tmp_path / "X"
    shutil.copytree(tiny_root / "TINY", folder)
    mat = {
        k: v for k, v in scipy.io.loadmat(str(folder / "att_splits.mat")).items() if not k.startswith("__")
    }
    edit(mat)
    scipy.io.savemat(str(folder / "att_splits.mat"), mat)
    return folder


def test_train_and_val_locs_that_share_a_class_are_refused(tmp_path: Path, tiny_root: Path) -> None:
    def share_one_image(mat: dict) -> None:
        # One image of a validation-train class (an image that is also in trainval) put into val_loc too.
        trainval = set(mat["trainval_loc"].ravel().tolist())
        shared = next(loc for loc in mat["train_loc"].ravel() if loc in trainval)
        mat["val_loc"] = np.concatenate([mat["val_loc"].ravel(), [shared]]).reshape(-1, 1)

    _with_edited_splits(tmp_path, tiny_root, share_one_image)
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path, "X")
    assert "train_loc and val_loc share classes" in _one_line(error)


def test_data_without_any_validation_split_has_none(tmp_path: Path, tiny_root: Path) -> None:
    def drop_validation_locs(mat: dict) -> None:
        del mat["train_loc"], mat["val_loc"]

    folder = _with_edited_splits(tmp_path, tiny_root, drop_validation_locs)
    for name in ("trainclasses1.txt", "valclasses1.txt"):
        (folder / name).unlink(missing_ok=True)
    data = load_xlsa17(tmp_path, "X")
    assert not data.has_validation_split and data.val_split_source == ""


def test_locs_out_of_range(tmp_path: Path, tiny_root: Path) -> None:
    _with_edited_splits(tmp_path, tiny_root, lambda mat: mat.update(test_seen_loc=np.array([[100000]])))
    with pytest.raises(DataError) as error:
        load_xlsa17(tmp_path, "X")
    assert "test_seen_loc" in _one_line(error)


def test_scaler_fits_on_training_rows_only() -> None:
    train = np.array([[0.0, 10.0], [2.0, 20.0]], dtype=np.float32)
    test = np.array([[4.0, 0.0]], dtype=np.float32)
    scaler = FeatureScaler().fit(train)
    assert np.allclose(scaler.transform(train), [[0, 0], [1, 1]])
    assert np.allclose(scaler.transform(test), [[2.0, -1.0]])  # test values are NOT clipped into [0, 1]
    restored = FeatureScaler.from_state_dict(scaler.state_dict())
    assert np.allclose(restored.transform(test), scaler.transform(test))
    with pytest.raises(DataError):
        scaler.transform(np.zeros((1, 3)))
    with pytest.raises(DataError):
        FeatureScaler.from_state_dict({"data_min": np.zeros(2)})


def test_holdout_split_is_stratified() -> None:
    labels = np.repeat(np.arange(3), 10)
    kept, held = holdout_split(labels, np.arange(30), 0.2, seed=0)
    assert np.intersect1d(kept, held).size == 0 and kept.size + held.size == 30
    assert np.array_equal(np.bincount(labels[held]), [2, 2, 2])
