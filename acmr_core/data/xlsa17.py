"""Loading xlsa17-layout datasets, the feature scaler, and the class-level validation split.

Public interface:

* :class:`ZSLData` — features ``(N, D)`` float32, labels ``(N,)`` int64 (0-based columns of ``attributes``),
  attributes ``(C, A)`` float32, class/attribute names, image files, and 0-based index arrays ``trainval``,
  ``test_seen``, ``test_unseen``, ``train``, ``val``.
* :func:`load_xlsa17` ``(root, dataset=None) -> ZSLData`` — reads ``res101.mat`` + ``att_splits.mat`` from
  ``root/<dataset>/`` (or from ``root`` itself when ``dataset`` is None).
* :class:`FeatureScaler` — MinMax scaling (sklearn) fitted on training features only; ``state_dict()`` /
  ``from_state_dict()`` give plain arrays for safetensors.
* :func:`holdout_split` — stratified per-class split of training images (the validation "test seen").

The validation split never touches test images. xlsa17's ``train_loc`` ∪ ``val_loc`` covers trainval ∪
test_seen (see the xlsa17 README), so ``ZSLData.train`` / ``ZSLData.val`` are the *trainval* images of the
validation train classes / val classes; the classes come from ``train_loc``/``val_loc`` restricted to trainval
when the file has them, else from ``trainclasses1.txt``/``valclasses1.txt`` (e.g. the re-saved CUB copy).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from sklearn.preprocessing import MinMaxScaler

from acmr_core.errors import DataError

log = logging.getLogger(__name__)

FEATURES_FILE = "res101.mat"
SPLITS_FILE = "att_splits.mat"
REQUIRED_SPLIT_KEYS = ("att", "trainval_loc", "test_seen_loc", "test_unseen_loc")
#: Largest magnitude accepted in image features and class attributes. Real ones are small (ResNet-101
#: features 0..~30, xlsa17 attributes within ±1); anything far larger is damage, and would overflow float32
#: in the scaler's ranges and the losses' squares (NaN weights, then NaN predictions).
MAX_ABS_VALUE = 1e6


@dataclass
class ZSLData:
    features: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    class_names: list[str]
    trainval: np.ndarray
    test_seen: np.ndarray
    test_unseen: np.ndarray
    train: np.ndarray
    val: np.ndarray
    image_files: list[str] = field(default_factory=list)
    attribute_names: list[str] = field(default_factory=list)
    dataset: str = ""
    # Where the validation classes came from: "locs", "class-files", or "" when the data has no split.
    val_split_source: str = ""

    @property
    def seen_classes(self) -> np.ndarray:
        return np.unique(self.labels[self.trainval])

    @property
    def unseen_classes(self) -> np.ndarray:
        return np.unique(self.labels[self.test_unseen])

    @property
    def has_validation_split(self) -> bool:
        return self.train.size > 0 and self.val.size > 0


def _load_mat(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} not found; expected the xlsa17 layout <root>/<DATASET>/{path.name}")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as error:  # scipy raises several types for truncated/corrupt files
        raise DataError(f"{path} cannot be read as a MATLAB file ({type(error).__name__}: {error})") from None


def _require(mat: dict[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in mat:
        raise DataError(f"{path} has no '{key}' entry; is it an xlsa17 {path.name}?")
    return np.asarray(mat[key])


def numeric_matrix(
    values: np.ndarray, what: str, axes: tuple[str, str], *, transpose: bool = False
) -> np.ndarray:
    """``values`` (2-D) as a contiguous float32 matrix, refused with a :class:`DataError` naming ``what`` if
    any entry is NaN, infinite or beyond ±:data:`MAX_ABS_VALUE`.

    Checked once at load, so every command reading the data refuses it in one line: one NaN feature would
    otherwise train a model whose weights are all NaN, and an infinite one makes sklearn's scaler raise.
    ``axes`` names the rows and columns of the result (e.g. ``("image", "feature")``) for the message.
    """
    try:
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
            matrix = np.ascontiguousarray(values.T if transpose else values, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{what} is not a numeric matrix (dtype {values.dtype})") from None
    if matrix.ndim != 2:
        raise DataError(f"{what} must be a 2-D matrix, got shape {matrix.shape}")
    # One pass: NaN fails every comparison, so it is caught with the infinite and the huge values.
    bad = ~(np.abs(matrix) <= MAX_ABS_VALUE)
    if bad.any():
        row, column = (int(i) + 1 for i in np.unravel_index(int(np.argmax(bad)), matrix.shape))
        first = float(matrix[row - 1, column - 1])
        kind = "NaN" if np.isnan(first) else "infinite" if np.isinf(first) else f"{first:g}"
        raise DataError(
            f"{what} has {int(bad.sum())} value(s) that are NaN, infinite or beyond ±{MAX_ABS_VALUE:g} "
            f"(first: {kind} at {axes[0]} {row}, {axes[1]} {column}); the file is damaged — regenerate it"
        )
    return matrix


def mat_strings(cell: Any) -> list[str]:
    """Flatten a MATLAB cell array of strings (as scipy loads it) into a list of str."""
    out = []
    for item in np.asarray(cell, dtype=object).ravel():
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.ravel()[0]
        if isinstance(item, np.ndarray):
            item = "".join(str(x) for x in item.ravel()) if item.size else ""
        out.append(str(item).strip())
    return out


def _locs(mat: dict[str, Any], key: str, path: Path, n_images: int) -> np.ndarray:
    locs = _require(mat, key, path).astype(np.int64).ravel()
    if locs.size and (locs.min() < 1 or locs.max() > n_images):
        raise DataError(
            f"{path}: '{key}' indexes images {locs.min()}..{locs.max()} "
            f"but {FEATURES_FILE} has {n_images} images"
        )
    return locs - 1


def mat_cell(strings: Sequence[str]) -> np.ndarray:
    """A column cell array of strings as ``scipy.io.savemat`` writes it (inverse of :func:`mat_strings`)."""
    cell = np.empty((len(strings), 1), dtype=object)
    for row, text in enumerate(strings):
        cell[row, 0] = text
    return cell


def read_name_list(path: Path, *, errors: str = "strict") -> list[str]:
    """The non-blank lines of a class or attribute list, stripped; ``errors`` as in :meth:`bytes.decode`."""
    return [
        line.strip() for line in path.read_text(encoding="utf-8", errors=errors).splitlines() if line.strip()
    ]


def read_id_name_list(path: Path, *, errors: str = "strict") -> list[str]:
    """``<id> <name>`` lines (classes.txt, attributes.txt, predicates.txt) → names in file order."""
    return [re.sub(r"^\d+\s+", "", line) for line in read_name_list(path, errors=errors)]


def _read_attribute_names(folder: Path, n_attributes: int) -> list[str]:
    """Attribute names from attributes.txt / predicates.txt ("<id> <name>") or SUN's attributes.mat."""
    for name in ("attributes.txt", "predicates.txt"):
        path = folder / name
        if path.is_file():
            names = read_id_name_list(path)
            if len(names) == n_attributes:
                return names
            log.warning("%s lists %d names for %d attributes; ignoring it", path, len(names), n_attributes)
    mat_path = folder / "attributes.mat"
    if mat_path.is_file():
        try:
            names = mat_strings(scipy.io.loadmat(str(mat_path))["attributes"])
            if len(names) == n_attributes:
                return names
        except Exception:  # optional metadata: fall back to generic names
            log.warning("could not read attribute names from %s", mat_path)
    return [f"attribute_{i}" for i in range(n_attributes)]


def _classes_of(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return np.unique(labels[indices]) if indices.size else np.zeros(0, dtype=np.int64)


def _validation_classes(
    mat: dict[str, Any],
    split_path: Path,
    folder: Path,
    labels: np.ndarray,
    trainval: np.ndarray,
    class_names: list[str],
    n_images: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Train/val *classes* of validation split 1, computed from trainval images only."""
    if "train_loc" in mat and "val_loc" in mat:
        trainval_set = np.zeros(n_images, dtype=bool)
        trainval_set[trainval] = True
        train_loc = _locs(mat, "train_loc", split_path, n_images)
        val_loc = _locs(mat, "val_loc", split_path, n_images)
        train_classes = _classes_of(labels, train_loc[trainval_set[train_loc]])
        val_classes = _classes_of(labels, val_loc[trainval_set[val_loc]])
        if np.intersect1d(train_classes, val_classes).size:
            raise DataError(f"{split_path}: train_loc and val_loc share classes; they must be class-disjoint")
        return train_classes, val_classes, "locs"
    train_file, val_file = folder / "trainclasses1.txt", folder / "valclasses1.txt"
    if train_file.is_file() and val_file.is_file():
        index = {name: i for i, name in enumerate(class_names)}
        resolved = []
        for path in (train_file, val_file):
            names = read_name_list(path)
            unknown = [n for n in names if n not in index]
            if unknown:
                raise DataError(
                    f"{path}: class '{unknown[0]}' is not in allclasses_names of {split_path.name}"
                )
            resolved.append(np.array(sorted(index[n] for n in names), dtype=np.int64))
        return resolved[0], resolved[1], "class-files"
    log.info(
        "%s has no train_loc/val_loc and %s has no trainclasses1.txt/valclasses1.txt", split_path, folder
    )
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, ""


def load_xlsa17(root: str | Path, dataset: str | None = None) -> ZSLData:
    """Load ``res101.mat`` and ``att_splits.mat`` (xlsa17 layout) into a :class:`ZSLData`."""
    folder = Path(root) / dataset if dataset else Path(root)
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist; pass --data-root containing <DATASET>/res101.mat"
        )
    features_path, split_path = folder / FEATURES_FILE, folder / SPLITS_FILE
    features_mat = _load_mat(features_path)
    split_mat = _load_mat(split_path)

    raw_labels = _require(features_mat, "labels", features_path).astype(np.int64).ravel()
    n_images = raw_labels.size
    features = _require(features_mat, "features", features_path)
    if features.ndim != 2 or n_images not in features.shape:
        raise DataError(
            f"{features_path}: 'features' has shape {features.shape} but there are {n_images} labels; "
            "expected (feature_dim, N)"
        )
    # xlsa17 stores features as (D, N); accept (N, D) too when unambiguous.
    features = numeric_matrix(
        features,
        f"{features_path}: 'features'",
        ("image", "feature"),
        transpose=features.shape[1] == n_images,
    )

    attributes = _require(split_mat, "att", split_path)
    if attributes.ndim != 2:
        raise DataError(
            f"{split_path}: 'att' must be a 2-D (attributes x classes) matrix, got {attributes.shape}"
        )
    attributes = numeric_matrix(attributes, f"{split_path}: 'att'", ("class", "attribute"), transpose=True)
    n_classes = attributes.shape[0]
    if raw_labels.min() < 1 or raw_labels.max() > n_classes:
        raise DataError(
            f"{features_path}: labels range {raw_labels.min()}..{raw_labels.max()} but 'att' in "
            f"{split_path.name} has {n_classes} classes (labels are 1-based)"
        )
    labels = raw_labels - 1

    if "allclasses_names" in split_mat:
        class_names = mat_strings(split_mat["allclasses_names"])
        if len(class_names) != n_classes:
            raise DataError(f"{split_path}: {len(class_names)} class names for {n_classes} attribute columns")
    else:
        class_names = [f"class_{i}" for i in range(n_classes)]

    trainval = _locs(split_mat, "trainval_loc", split_path, n_images)
    test_seen = _locs(split_mat, "test_seen_loc", split_path, n_images)
    test_unseen = _locs(split_mat, "test_unseen_loc", split_path, n_images)
    for key in REQUIRED_SPLIT_KEYS[1:]:
        if not _require(split_mat, key, split_path).size:
            raise DataError(f"{split_path}: '{key}' is empty")

    train_classes, val_classes, source = _validation_classes(
        split_mat, split_path, folder, labels, trainval, class_names, n_images
    )
    trainval_labels = labels[trainval]
    train = trainval[np.isin(trainval_labels, train_classes)]
    val = trainval[np.isin(trainval_labels, val_classes)]

    image_files: list[str] = []
    if "image_files" in features_mat:
        image_files = mat_strings(features_mat["image_files"])
        if len(image_files) != n_images:
            log.warning(
                "%s: %d image_files for %d images; ignoring them", features_path, len(image_files), n_images
            )
            image_files = []

    return ZSLData(
        features=features,
        labels=labels,
        attributes=attributes,
        class_names=class_names,
        trainval=trainval,
        test_seen=test_seen,
        test_unseen=test_unseen,
        train=train,
        val=val,
        image_files=image_files,
        attribute_names=_read_attribute_names(folder, attributes.shape[1]),
        dataset=dataset or folder.name,
        val_split_source=source,
    )


class FeatureScaler:
    """MinMax feature scaling (sklearn ``MinMaxScaler``) fitted on the training split only."""

    def __init__(self) -> None:
        self._scaler: MinMaxScaler | None = None

    @property
    def fitted(self) -> bool:
        return self._scaler is not None

    def fit(self, train_features: np.ndarray) -> FeatureScaler:
        self._scaler = MinMaxScaler().fit(np.asarray(train_features, dtype=np.float32))
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        if self._scaler is None:
            raise RuntimeError("FeatureScaler.transform called before fit")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self._scaler.n_features_in_:
            raise DataError(
                f"features have shape {features.shape}; the scaler expects (N, {self._scaler.n_features_in_})"
            )
        return self._scaler.transform(features).astype(np.float32, copy=False)

    def state_dict(self) -> dict[str, np.ndarray]:
        if self._scaler is None:
            raise RuntimeError("FeatureScaler.state_dict called before fit")
        return {
            "data_min": self._scaler.data_min_.astype(np.float32),
            "data_max": self._scaler.data_max_.astype(np.float32),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FeatureScaler:
        try:
            data_min = np.asarray(state["data_min"], dtype=np.float32).ravel()
            data_max = np.asarray(state["data_max"], dtype=np.float32).ravel()
        except KeyError as error:
            raise DataError(f"scaler state is missing '{error.args[0]}'") from None
        if (
            data_min.shape != data_max.shape
            or not np.all(np.isfinite(data_min))
            or not np.all(np.isfinite(data_max))
        ):
            raise DataError("scaler state is corrupt (min/max arrays differ in shape or are not finite)")
        # Fitting on the two extreme rows reproduces exactly the fitted min/max (and sklearn's zero-range
        # rule).
        return cls().fit(np.stack([data_min, data_max]))


def holdout_split(
    labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` per class into (kept, held-out ~``fraction``); every class keeps at least one
    image."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for cls in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == cls])
        n_held = round(fraction * members.size) if members.size > 1 else 0
        n_held = min(max(n_held, 1 if members.size > 1 else 0), members.size - 1)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))
