"""How each benchmark's unpacked archives are laid out.

Each :class:`DatasetSpec` says which sources (:mod:`acmr_core.data.sources`) a dataset needs and how to read
its unpacked layout:

* CUB (``CUB_200_2011.tgz``): ``CUB_200_2011/images/<id>.<Name>/*.jpg``, ``classes.txt``, ``images.txt``,
  ``image_class_labels.txt``, ``attributes/class_attribute_labels_continuous.txt`` and ``attributes.txt``
  (at the archive top level in the official tarball; also looked for inside ``CUB_200_2011/``).
* AwA2 (``AwA2-data.zip``): ``Animals_with_Attributes2/JPEGImages/<class>/*.jpg``, ``classes.txt``,
  ``predicates.txt``, ``predicate-matrix-continuous.txt``.
* SUN (``SUNAttributeDB_Images.tar.gz`` + ``SUNAttributeDB.tar.gz``):
  ``images/<letter>/<scene>[/<sub>]/*.jpg``; ``SUNAttributeDB/attributes.mat`` (102 names), ``images.mat``
  (the 14340 image paths).
* xlsa17 (``xlsa17.zip``, Xian et al.): ``xlsa17/data/<CUB|AWA2|SUN>/att_splits.mat``, ``res101.mat`` and
  the class lists (read into an :class:`Xlsa17Meta`). ``att_splits.mat`` indexes *rows of res101.mat*; its
  ``image_files`` say which image each row is. CUB columns follow ``allclasses.txt``
  (``002.Laysan_Albatross`` first), not the CUB class id.

Which images form the split is :mod:`acmr_core.data.image_plan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.io

from acmr_core.data.sources import SOURCES, Source
from acmr_core.data.xlsa17 import mat_strings, numeric_matrix, read_id_name_list, read_name_list
from acmr_core.errors import DataError

log = logging.getLogger(__name__)

#: Text files in downloaded archives are read leniently: a badly encoded byte must not stop a 1 GB bootstrap.
ARCHIVE_TEXT_ERRORS = "replace"


# ------------------------------------------------------------------------------------------------------------
# Locating things inside unpacked archives


def find_folder(root: Path, required: tuple[str, ...], *, max_depth: int = 3) -> Path | None:
    """The shallowest folder under ``root`` (itself included) that holds every entry in ``required``."""
    frontier = [Path(root)]
    for _ in range(max_depth + 1):
        for folder in frontier:
            if all((folder / name).exists() for name in required):
                return folder
        frontier = sorted(
            child
            for folder in frontier
            for child in folder.iterdir()
            if child.is_dir() and child.name != "__MACOSX"
        )
        if not frontier:
            break
    return None


def missing_entry_error(source: Source, url: str, entry: str) -> DataError:
    return DataError(
        f"the {source.name} archive ({url}) has no '{entry}': it is incomplete or not {source.filename}; "
        f"{source.hint()}"
    )


def require_folder(root: Path, required: tuple[str, ...], source: Source, url: str) -> Path:
    """Like :func:`find_folder`, but a missing entry is a one-line error naming it and the archive."""
    folder = find_folder(root, required)
    if folder is not None:
        return folder
    # Name the first entry that no candidate folder has, from the folder that has the most of them.
    best = find_folder(root, required[:1]) or Path(root)
    missing = next(name for name in required if not (best / name).exists())
    prefix = best.relative_to(root).as_posix() if best != Path(root) else ""
    entry = f"{prefix}/{missing}" if prefix and prefix != "." else missing
    raise missing_entry_error(source, url, entry)


def load_mat(path: Path, what: str) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(str(path))
    except Exception as error:  # scipy raises several types for truncated/corrupt files
        raise DataError(
            f"{what} {path} cannot be read ({type(error).__name__}: {error}); re-download it"
        ) from None


# ------------------------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class DatasetLayout:
    """What a dataset's unpacked sources resolve to."""

    images_root: Path  # image paths in the plan are relative to this folder
    attribute_names_file: Path | None  # copied next to the written att_splits.mat (attributes.txt, ...)
    image_list: list[str] | None  # the dataset's own image order (relative paths), when it publishes one
    notes: list[str] = field(default_factory=list)
    # The dataset's own class-attribute table by class name (CUB, AwA2), to cross-check xlsa17's columns.
    class_attributes: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    key: str  # CLI name: cub, awa2, sun
    xlsa17: str  # folder name in xlsa17/data/
    sources: tuple[str, ...]  # image/metadata sources (xlsa17 is always added)
    preset: str  # acmr_core.model.config preset name
    anchor: str  # folder name in res101.mat image_files after which the path is relative to images_root
    locate: Callable[[dict[str, Path], dict[str, str]], DatasetLayout]
    class_of: Callable[[str], str]  # relative image path -> xlsa17 class name
    strict_class_check: bool  # image folder names are exactly the xlsa17 class names


def _locate_cub(roots: dict[str, Path], urls: dict[str, str]) -> DatasetLayout:
    source = SOURCES["cub"]
    folder = require_folder(roots["cub"], ("images", "classes.txt", "images.txt"), source, urls["cub"])
    attributes = next(
        (
            path
            for path in (
                folder / "attributes.txt",
                folder.parent / "attributes.txt",
                folder / "attributes" / "attributes.txt",
            )
            if path.is_file()
        ),
        None,
    )
    if attributes is None:
        raise missing_entry_error(source, urls["cub"], "attributes.txt")
    image_list = [
        line.split(maxsplit=1)[1]
        for line in read_name_list(folder / "images.txt", errors=ARCHIVE_TEXT_ERRORS)
    ]
    table = _class_table(
        folder / "classes.txt", folder / "attributes" / "class_attribute_labels_continuous.txt"
    )
    return DatasetLayout(folder / "images", attributes, image_list, class_attributes=table)


def _class_table(classes_file: Path, matrix_file: Path) -> dict[str, np.ndarray] | None:
    """Class name → row of a whitespace-separated class-attribute matrix (rows in classes.txt order)."""
    if not matrix_file.is_file():
        return None
    names = read_id_name_list(classes_file, errors=ARCHIVE_TEXT_ERRORS)
    try:
        matrix = np.loadtxt(matrix_file, ndmin=2)
    except ValueError:
        log.warning("%s is not a numeric matrix; skipping the attribute cross-check", matrix_file)
        return None
    if matrix.shape[0] != len(names):
        log.warning(
            "%s has %d rows for %d classes; skipping the cross-check",
            matrix_file,
            matrix.shape[0],
            len(names),
        )
        return None
    return dict(zip(names, matrix, strict=True))


def _locate_awa2(roots: dict[str, Path], urls: dict[str, str]) -> DatasetLayout:
    source = SOURCES["awa2"]
    folder = require_folder(
        roots["awa2"], ("JPEGImages", "classes.txt", "predicates.txt"), source, urls["awa2"]
    )
    table = _class_table(folder / "classes.txt", folder / "predicate-matrix-continuous.txt")
    return DatasetLayout(folder / "JPEGImages", folder / "predicates.txt", None, class_attributes=table)


def _locate_sun(roots: dict[str, Path], urls: dict[str, str]) -> DatasetLayout:
    images_source, meta_source = SOURCES["sun"], SOURCES["sun-attributes"]
    images_parent = require_folder(roots["sun"], ("images",), images_source, urls["sun"])
    meta = require_folder(
        roots["sun-attributes"], ("attributes.mat", "images.mat"), meta_source, urls["sun-attributes"]
    )
    image_list = [
        name.replace("\\", "/") for name in mat_strings(load_mat(meta / "images.mat", "SUN")["images"])
    ]
    return DatasetLayout(images_parent / "images", meta / "attributes.mat", image_list)


def _folder_class(relative: str) -> str:
    return PurePosixPath(relative).parent.name


def _sun_class(relative: str) -> str:
    # images/<letter>/<scene>[/<sub-scene>]/<file>.jpg -> "scene[_sub-scene]", the xlsa17 SUN class name.
    parts = PurePosixPath(relative).parts
    return "_".join(parts[1:-1])


DATASETS: dict[str, DatasetSpec] = {
    spec.key: spec
    for spec in (
        DatasetSpec("cub", "CUB", ("cub",), "CUB", "images", _locate_cub, _folder_class, True),
        DatasetSpec("awa2", "AWA2", ("awa2",), "AWA2", "JPEGImages", _locate_awa2, _folder_class, True),
        DatasetSpec("sun", "SUN", ("sun", "sun-attributes"), "SUN", "images", _locate_sun, _sun_class, False),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}") from None


# ------------------------------------------------------------------------------------------------------------
# xlsa17 metadata


@dataclass
class Xlsa17Meta:
    """The metadata of one dataset from xlsa17: the split file, optional res101.mat, class lists."""

    folder: Path
    splits: dict[str, Any]
    class_names: list[str]
    res101: dict[str, Any] | None

    def class_list(self, name: str) -> list[str] | None:
        path = self.folder / name
        return read_name_list(path, errors=ARCHIVE_TEXT_ERRORS) if path.is_file() else None


def _xlsa17_dataset_folder(root: Path, dataset: str) -> Path | None:
    """``<root>/…/data/<DS>``, ``<root>/…/<DS>`` (a copy of ``xlsa17/data``), or ``root`` itself — never the
    folder of another dataset."""
    for relative in (f"data/{dataset}", dataset):
        found = find_folder(root, (f"{relative}/att_splits.mat",))
        if found is not None:
            return found / relative
    return root if (root / "att_splits.mat").is_file() else None


def load_xlsa17_meta(root: Path, spec: DatasetSpec, url: str) -> Xlsa17Meta:
    source = SOURCES["xlsa17"]
    folder = _xlsa17_dataset_folder(Path(root), spec.xlsa17)
    if folder is None:
        raise missing_entry_error(source, url, f"xlsa17/data/{spec.xlsa17}/att_splits.mat")
    splits = load_mat(folder / "att_splits.mat", "xlsa17")
    for key in ("att", "allclasses_names", "trainval_loc", "test_seen_loc", "test_unseen_loc"):
        if key not in splits:
            raise DataError(f"{folder / 'att_splits.mat'} has no '{key}'; it is not an xlsa17 att_splits.mat")
    # A NaN or infinite attribute is refused here, before hours of downloads and feature extraction.
    attributes = numeric_matrix(
        np.asarray(splits["att"]), f"{folder / 'att_splits.mat'}: 'att'", ("attribute", "class")
    )
    class_names = mat_strings(splits["allclasses_names"])
    if len(class_names) != attributes.shape[1]:
        raise DataError(
            f"{folder / 'att_splits.mat'}: {len(class_names)} class names for the columns of 'att'"
        )
    res101 = None
    if (folder / "res101.mat").is_file():
        res101 = load_mat(folder / "res101.mat", "xlsa17")
        if "image_files" not in res101 or "labels" not in res101:
            log.warning(
                "%s has no image_files/labels; the split will be rebuilt from the class lists", folder
            )
            res101 = None
    return Xlsa17Meta(folder, splits, class_names, res101)
