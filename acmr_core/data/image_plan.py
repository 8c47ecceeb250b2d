"""The image plan: exactly the images of an xlsa17 split, in xlsa17 order, and the dataset folder from it.

:func:`plan_images` turns the unpacked sources (:mod:`acmr_core.data.layouts`) into an :class:`ImagePlan`:
the split's images in xlsa17 order with their labels and split indices — from ``res101.mat`` ``image_files``
when present, otherwise rebuilt from the class lists (recorded in the plan's ``origin`` and carried into the
bundle's provenance). :func:`write_xlsa17_folder` writes our features of those images, with the xlsa17
attributes and the plan's split, as a folder that :func:`acmr_core.data.xlsa17.load_xlsa17` reads.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from acmr_core.data.layouts import DatasetLayout, DatasetSpec, Xlsa17Meta
from acmr_core.data.sources import SOURCES
from acmr_core.data.xlsa17 import mat_cell, mat_strings
from acmr_core.errors import DataError
from acmr_core.fileio import atomic_write

log = logging.getLogger(__name__)

ORIGIN_RES101 = "res101.mat image_files"
ORIGIN_REBUILT = "rebuilt from the xlsa17 class lists (res101.mat absent)"
# xlsa17 holds out about 20 % of each seen class's images as test_seen (CUB 1764 of 8821, AWA2 5882 of 29409).
REBUILT_TEST_SEEN_FRACTION = 0.2
REBUILT_SPLIT_SEED = 0


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
    res101 = {
        "features": np.ascontiguousarray(features.T, dtype=np.float32),
        "labels": (plan.labels + 1).reshape(-1, 1).astype(np.float64),
        "image_files": mat_cell(plan.relative_paths),
    }
    _write_mat(out / "res101.mat", res101)
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
    _write_mat(out / "att_splits.mat", splits)
    for name in (
        "allclasses.txt",
        "trainvalclasses.txt",
        "testclasses.txt",
        "trainclasses1.txt",
        "valclasses1.txt",
    ):
        if (meta.folder / name).is_file():
            atomic_write(out / name, (meta.folder / name).read_bytes())
    if layout.attribute_names_file is not None:  # attributes.txt / predicates.txt / attributes.mat
        atomic_write(out / layout.attribute_names_file.name, layout.attribute_names_file.read_bytes())
    return out


def _write_mat(path: Path, content: dict[str, Any]) -> None:
    """A compressed ``.mat`` file, written atomically (a reader never sees half of one)."""
    atomic_write(path, lambda handle: scipy.io.savemat(handle.file, content, do_compression=True))
