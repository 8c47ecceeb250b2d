"""Where the benchmark datasets come from, and how their archives are laid out.

Each :class:`Source` is one downloadable archive (default URL, published checksum where one exists, size, the
CLI flag and environment variable that override it). Each :class:`DatasetSpec` says which sources a dataset
needs and how to read its extracted layout:

* CUB (``CUB_200_2011.tgz``): ``CUB_200_2011/images/<id>.<Name>/*.jpg``, ``classes.txt``, ``images.txt``,
  ``image_class_labels.txt``, ``attributes/class_attribute_labels_continuous.txt`` and ``attributes.txt``
  (at the archive top level in the official tarball; also looked for inside ``CUB_200_2011/``).
* AwA2 (``AwA2-data.zip``): ``Animals_with_Attributes2/JPEGImages/<class>/*.jpg``, ``classes.txt``,
  ``predicates.txt``, ``predicate-matrix-continuous.txt``.
* SUN (``SUNAttributeDB_Images.tar.gz`` + ``SUNAttributeDB.tar.gz``):
  ``images/<letter>/<scene>[/<sub>]/*.jpg``; ``SUNAttributeDB/attributes.mat`` (102 names), ``images.mat``
  (the 14340 image paths).
* xlsa17 (``xlsa17.zip``, Xian et al.): ``xlsa17/data/<CUB|AWA2|SUN>/att_splits.mat``, ``res101.mat`` and
  the class lists. ``att_splits.mat`` indexes *rows of res101.mat*; its ``image_files`` say which image each
  row is. CUB columns follow ``allclasses.txt`` (``002.Laysan_Albatross`` first), not the CUB class id.

:func:`plan_images` turns the extracted sources into an :class:`ImagePlan`: exactly the split's images in
xlsa17 order with their labels and split indices — from ``res101.mat`` ``image_files`` when present, otherwise
rebuilt from the class lists (recorded in the plan's ``origin`` and carried into the bundle's provenance).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import scipy.io

from acmr_core.data.xlsa17 import mat_strings
from acmr_core.errors import DataError

log = logging.getLogger(__name__)

ORIGIN_RES101 = "res101.mat image_files"
ORIGIN_REBUILT = "rebuilt from the xlsa17 class lists (res101.mat absent)"
# xlsa17 holds out about 20 % of each seen class's images as test_seen (CUB 1764 of 8821, AWA2 5882 of 29409).
REBUILT_TEST_SEEN_FRACTION = 0.2
REBUILT_SPLIT_SEED = 0


@dataclass(frozen=True)
class Source:
    """One downloadable archive."""

    name: str
    url: str
    filename: str
    checksum: str | None  # "md5:<hex>" / "sha256:<hex>" where the publisher gives one
    size: str  # human-readable download size
    flag: str
    env: str
    what: str

    def resolve_url(self, override: str | None = None) -> str:
        """The URL (or local path) to use: the CLI flag, else the environment variable, else the default."""
        return override or os.environ.get(self.env) or self.url

    def hint(self) -> str:
        return (
            f"use a mirror or a local copy with {self.flag} URL_OR_PATH (or {self.env}=...); "
            f"the official file is {self.filename} ({self.size})"
        )


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="cub",
            # CaltechDATA record of CUB-200-2011 (the old vision.caltech.edu/visipedia-data link is retired).
            url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            filename="CUB_200_2011.tgz",
            checksum="md5:97eceeb196236b17998738112f37df78",  # published by CaltechDATA
            size="1.1 GB",
            flag="--cub-url",
            env="ACMR_CUB_URL",
            what="CUB-200-2011 images, classes and attributes",
        ),
        Source(
            name="xlsa17",
            url="https://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip",
            filename="xlsa17.zip",
            checksum=None,  # no checksum is published
            size="0.9 GB",
            flag="--xlsa17-url",
            env="ACMR_XLSA17_URL",
            what="xlsa17 proposed splits v2 (att_splits.mat, res101.mat, class lists)",
        ),
        Source(
            name="awa2",
            url="https://cvml.ista.ac.at/AwA2/AwA2-data.zip",
            filename="AwA2-data.zip",
            checksum=None,
            size="13 GB",
            flag="--awa2-url",
            env="ACMR_AWA2_URL",
            what="Animals with Attributes 2 images and predicates",
        ),
        Source(
            name="sun",
            url="https://cs.brown.edu/people/gmpatter/Attributes/SUNAttributeDB_Images.tar.gz",
            filename="SUNAttributeDB_Images.tar.gz",
            checksum=None,
            size="1.8 GB",
            flag="--sun-url",
            env="ACMR_SUN_URL",
            what="SUN attribute database images",
        ),
        Source(
            name="sun-attributes",
            url="https://cs.brown.edu/people/gmpatter/Attributes/SUNAttributeDB.tar.gz",
            filename="SUNAttributeDB.tar.gz",
            checksum=None,
            size="a few MB",
            flag="--sun-attributes-url",
            env="ACMR_SUN_ATTRIBUTES_URL",
            what="SUN attribute database metadata (attributes.mat, images.mat)",
        ),
    )
}


# ------------------------------------------------------------------------------------------------------------
# Locating things inside extracted archives


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


def read_lines(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]


def read_id_name_list(path: Path) -> list[str]:
    """``<id> <name>`` lines (classes.txt, attributes.txt, predicates.txt) → names in file order."""
    return [re.sub(r"^\d+\s+", "", line) for line in read_lines(path)]


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
    """What a dataset's extracted sources resolve to."""

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
    image_list = [line.split(maxsplit=1)[1] for line in read_lines(folder / "images.txt")]
    table = _class_table(
        folder / "classes.txt", folder / "attributes" / "class_attribute_labels_continuous.txt"
    )
    return DatasetLayout(folder / "images", attributes, image_list, class_attributes=table)


def _class_table(classes_file: Path, matrix_file: Path) -> dict[str, np.ndarray] | None:
    """Class name → row of a whitespace-separated class-attribute matrix (rows in classes.txt order)."""
    if not matrix_file.is_file():
        return None
    names = read_id_name_list(classes_file)
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


def check_attribute_order(spec: DatasetSpec, layout: DatasetLayout, meta: Xlsa17Meta) -> bool:
    """Does xlsa17's ``original_att`` column for each class equal the dataset's own row for that name?

    This is the check behind the xlsa17 caution that CUB columns follow ``allclasses.txt``, not CUB class ids:
    a mismatch means the archives do not belong together (or the order was misread). Logged, not fatal.
    """
    if layout.class_attributes is None or "original_att" not in meta.splits:
        return True
    original = np.asarray(meta.splits["original_att"], dtype=np.float64)
    mismatched = [
        name
        for column, name in enumerate(meta.class_names)
        if name not in layout.class_attributes
        or layout.class_attributes[name].shape != original[:, column].shape
        or not np.allclose(layout.class_attributes[name], original[:, column], atol=1e-3)
    ]
    if mismatched:
        log.warning(
            "%s: %d of %d xlsa17 attribute columns differ from the dataset's own class-attribute table "
            "(first: %s); the xlsa17 matrix is used",
            spec.xlsa17, len(mismatched), len(meta.class_names), mismatched[0],
        )  # fmt: skip
        return False
    log.info("%s: xlsa17 attribute columns match the dataset's own table, class by class", spec.xlsa17)
    return True


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
        return read_lines(path) if path.is_file() else None


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
    class_names = mat_strings(splits["allclasses_names"])
    if len(class_names) != np.asarray(splits["att"]).shape[1]:
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


# ------------------------------------------------------------------------------------------------------------
# The image plan


@dataclass
class ImagePlan:
    """Exactly the images of the split, in order, with labels (0-based att columns) and split indices."""

    dataset: str
    images_root: Path
    relative_paths: list[str]
    labels: np.ndarray
    trainval: np.ndarray
    test_seen: np.ndarray
    test_unseen: np.ndarray
    origin: str
    notes: list[str] = field(default_factory=list)
    n_dropped: int = 0  # unreadable images removed after planning (split indices were renumbered)

    @property
    def paths(self) -> list[Path]:
        return [self.images_root / relative for relative in self.relative_paths]

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "images_root": str(self.images_root),
            "relative_paths": self.relative_paths,
            "labels": self.labels.tolist(),
            "trainval": self.trainval.tolist(),
            "test_seen": self.test_seen.tolist(),
            "test_unseen": self.test_unseen.tolist(),
            "origin": self.origin,
            "notes": self.notes,
            "n_dropped": self.n_dropped,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImagePlan:
        as_int = lambda key: np.asarray(data[key], dtype=np.int64)  # noqa: E731
        return cls(
            dataset=data["dataset"],
            images_root=Path(data["images_root"]),
            relative_paths=list(data["relative_paths"]),
            labels=as_int("labels"),
            trainval=as_int("trainval"),
            test_seen=as_int("test_seen"),
            test_unseen=as_int("test_unseen"),
            origin=data["origin"],
            notes=list(data.get("notes", [])),
            n_dropped=int(data.get("n_dropped", 0)),
        )

    def drop(self, positions: np.ndarray) -> ImagePlan:
        """The plan without the images at ``positions`` (e.g. unreadable files), split indices renumbered."""
        keep = np.ones(len(self.relative_paths), dtype=bool)
        keep[np.asarray(positions, dtype=np.int64)] = False
        new_index = np.cumsum(keep) - 1
        remap = lambda idx: new_index[idx[keep[idx]]]  # noqa: E731
        return ImagePlan(
            self.dataset,
            self.images_root,
            [path for path, kept in zip(self.relative_paths, keep, strict=True) if kept],
            self.labels[keep],
            remap(self.trainval),
            remap(self.test_seen),
            remap(self.test_unseen),
            self.origin,
            [*self.notes, f"{int((~keep).sum())} unreadable images dropped from the split"],
            self.n_dropped + int((~keep).sum()),
        )


def relative_image_path(image_file: str, anchor: str) -> str:
    """``/BS/.../CUB_200_2011/images/001.X/a.jpg`` → ``001.X/a.jpg`` (after the last ``/<anchor>/``)."""
    normalised = re.sub(r"/+", "/", image_file.replace("\\", "/"))
    marker = f"/{anchor}/"
    position = normalised.rfind(marker)
    if position < 0:
        raise DataError(
            f"res101.mat image file '{image_file}' has no '{marker}' folder; cannot map it to an image"
        )
    return normalised[position + len(marker) :]


def _check_classes(
    spec: DatasetSpec, relative: list[str], labels: np.ndarray, class_names: list[str]
) -> None:
    mismatched = [
        (path, class_names[label])
        for path, label in zip(relative, labels, strict=True)
        if spec.class_of(path) != class_names[label]
    ]
    if not mismatched:
        return
    path, expected = mismatched[0]
    message = (
        f"{len(mismatched)} of {len(relative)} images in res101.mat sit in a folder that is not their xlsa17 "
        f"class (e.g. '{path}' is labelled '{expected}')"
    )
    if spec.strict_class_check:
        raise DataError(message + "; the image archive and xlsa17 do not match")
    log.warning("%s; keeping the xlsa17 labels", message)


def plan_images(spec: DatasetSpec, layout: DatasetLayout, meta: Xlsa17Meta) -> ImagePlan:
    """The images of the xlsa17 split in xlsa17 order (see the module docstring)."""
    check_attribute_order(spec, layout, meta)
    if meta.res101 is not None:
        return _plan_from_res101(spec, layout, meta)
    return _plan_rebuilt(spec, layout, meta)


def _locs(meta: Xlsa17Meta, key: str, n_images: int) -> np.ndarray:
    locs = np.asarray(meta.splits[key], dtype=np.int64).ravel() - 1
    if locs.size and (locs.min() < 0 or locs.max() >= n_images):
        raise DataError(f"xlsa17 {key} indexes image {locs.max() + 1} but res101.mat lists {n_images} images")
    return locs


def _require_images_exist(layout: DatasetLayout, relative: list[str], what: str) -> None:
    missing = [path for path in relative if not (layout.images_root / path).is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(relative)} images {what} are missing under {layout.images_root} "
            f"(first: '{missing[0]}'); the image archive is incomplete or another version"
        )


def _plan_from_res101(spec: DatasetSpec, layout: DatasetLayout, meta: Xlsa17Meta) -> ImagePlan:
    assert meta.res101 is not None
    relative = [relative_image_path(name, spec.anchor) for name in mat_strings(meta.res101["image_files"])]
    labels = np.asarray(meta.res101["labels"], dtype=np.int64).ravel() - 1
    if labels.size != len(relative):
        raise DataError(f"res101.mat has {labels.size} labels for {len(relative)} image_files")
    if labels.min() < 0 or labels.max() >= len(meta.class_names):
        raise DataError(f"res101.mat labels exceed the {len(meta.class_names)} classes of att_splits.mat")
    _require_images_exist(layout, relative, "listed in xlsa17 res101.mat")
    _check_classes(spec, relative, labels, meta.class_names)
    n_images = len(relative)
    return ImagePlan(
        spec.xlsa17,
        layout.images_root,
        relative,
        labels,
        _locs(meta, "trainval_loc", n_images),
        _locs(meta, "test_seen_loc", n_images),
        _locs(meta, "test_unseen_loc", n_images),
        ORIGIN_RES101,
        list(layout.notes),
    )


def _image_candidates(layout: DatasetLayout) -> list[str]:
    if layout.image_list is not None:
        return list(layout.image_list)
    suffixes = {".jpg", ".jpeg", ".png"}
    return sorted(
        path.relative_to(layout.images_root).as_posix()
        for path in layout.images_root.rglob("*")
        if path.suffix.lower() in suffixes and path.is_file()
    )


def _plan_rebuilt(spec: DatasetSpec, layout: DatasetLayout, meta: Xlsa17Meta) -> ImagePlan:
    seen_names, unseen_names = meta.class_list("trainvalclasses.txt"), meta.class_list("testclasses.txt")
    if seen_names is None or unseen_names is None:
        raise DataError(
            f"{meta.folder} has neither res101.mat nor trainvalclasses.txt/testclasses.txt; cannot tell "
            "which "
            f"images form the {spec.xlsa17} split — use the official xlsa17.zip ({SOURCES['xlsa17'].flag})"
        )
    index = {name: i for i, name in enumerate(meta.class_names)}
    unknown = [name for name in seen_names + unseen_names if name not in index]
    if unknown:
        raise DataError(f"{meta.folder}: class '{unknown[0]}' of the class lists is not in att_splits.mat")
    relative = [path for path in _image_candidates(layout) if spec.class_of(path) in index]
    skipped_classes = {spec.class_of(path) for path in _image_candidates(layout)} - set(index)
    if skipped_classes:
        log.warning("%d image folders are not xlsa17 classes and were left out", len(skipped_classes))
    _require_images_exist(layout, relative, "listed by the dataset")
    labels = np.array([index[spec.class_of(path)] for path in relative], dtype=np.int64)
    seen = np.array(sorted(index[name] for name in seen_names), dtype=np.int64)
    unseen = np.array(sorted(index[name] for name in unseen_names), dtype=np.int64)
    without_images = [meta.class_names[c] for c in np.concatenate([seen, unseen]) if not np.any(labels == c)]
    if without_images:
        raise DataError(
            f"no images found for class '{without_images[0]}' under {layout.images_root}; "
            "the archive is incomplete"
        )
    rng = np.random.default_rng(REBUILT_SPLIT_SEED)
    trainval, test_seen = [], []
    for cls in seen:
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = min(round(REBUILT_TEST_SEEN_FRACTION * members.size), members.size - 1)
        test_seen.append(members[:n_test])
        trainval.append(members[n_test:])
    test_unseen = np.flatnonzero(np.isin(labels, unseen))
    note = (
        f"split {ORIGIN_REBUILT}: every image of testclasses.txt is test_unseen; "
        f"{REBUILT_TEST_SEEN_FRACTION:.0%} of each seen class (seed {REBUILT_SPLIT_SEED}) is test_seen — "
        "numbers are not comparable with published xlsa17 results"
    )
    log.warning(note)
    return ImagePlan(
        spec.xlsa17,
        layout.images_root,
        relative,
        labels,
        np.sort(np.concatenate(trainval)),
        np.sort(np.concatenate(test_seen)),
        np.sort(test_unseen),
        ORIGIN_REBUILT,
        [*layout.notes, note],
    )


# ------------------------------------------------------------------------------------------------------------
# Writing the xlsa17-layout folder that acmr_core.data.xlsa17.load_xlsa17 reads


def write_xlsa17_folder(
    out: Path, plan: ImagePlan, features: np.ndarray, meta: Xlsa17Meta, layout: DatasetLayout
) -> Path:
    """Write ``out/res101.mat`` (our features) and ``out/att_splits.mat`` (xlsa17 attributes, our split)."""
    out.mkdir(parents=True, exist_ok=True)
    if features.shape[0] != len(plan.relative_paths):
        raise DataError(f"{features.shape[0]} feature rows for {len(plan.relative_paths)} planned images")
    image_files = np.empty((len(plan.relative_paths), 1), dtype=object)
    for row, relative in enumerate(plan.relative_paths):
        image_files[row, 0] = relative
    scipy.io.savemat(
        str(out / "res101.mat"),
        {
            "features": np.ascontiguousarray(features.T, dtype=np.float32),
            "labels": (plan.labels + 1).reshape(-1, 1).astype(np.float64),
            "image_files": image_files,
        },
        do_compression=True,
    )
    splits: dict[str, Any] = {
        key: meta.splits[key] for key in ("att", "original_att", "allclasses_names") if key in meta.splits
    }
    splits.update(
        {
            "trainval_loc": (plan.trainval + 1).reshape(-1, 1).astype(np.float64),
            "test_seen_loc": (plan.test_seen + 1).reshape(-1, 1).astype(np.float64),
            "test_unseen_loc": (plan.test_unseen + 1).reshape(-1, 1).astype(np.float64),
        }
    )
    official_rows = plan.origin == ORIGIN_RES101 and plan.n_dropped == 0
    if official_rows and "train_loc" in meta.splits and "val_loc" in meta.splits:
        # Same rows as res101.mat, so the official validation locs keep their meaning; after dropping images
        # (or in a rebuilt split) validation comes from trainclasses1.txt / valclasses1.txt instead.
        splits["train_loc"], splits["val_loc"] = meta.splits["train_loc"], meta.splits["val_loc"]
    scipy.io.savemat(str(out / "att_splits.mat"), splits, do_compression=True)
    for name in (
        "allclasses.txt",
        "trainvalclasses.txt",
        "testclasses.txt",
        "trainclasses1.txt",
        "valclasses1.txt",
    ):
        if (meta.folder / name).is_file():
            shutil.copyfile(meta.folder / name, out / name)
    if layout.attribute_names_file is not None:  # attributes.txt / predicates.txt / attributes.mat
        shutil.copyfile(layout.attribute_names_file, out / layout.attribute_names_file.name)
    return out
