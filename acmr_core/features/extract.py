"""Images → backbone features, saved with their labels, paths and the backbone identity.

Inputs (:func:`find_images`):

* an image folder: each sub-folder is a class (its name is the class name, classes sorted by name); images
  directly in the folder have no label (``-1``);
* a list file: one image per line, ``relative/path [label]`` (paths relative to the list file's folder, or
  to ``root``; a tab separates path and label when the path contains spaces; ``#`` starts a comment).

The features file (:func:`save_features` / :func:`load_features`) is one ``.safetensors`` file: tensors
``features`` (n × d, float32) and ``labels`` (n, int64, ``-1`` = unlabelled); everything else is JSON in the
safetensors header metadata (``acmr_features`` = format version, ``backbone`` = :class:`BackboneIdentity`,
``class_names``, ``image_paths``, ``skipped``), so one file carries all of it and nothing is pickled.

On request :func:`write_res101_mat` also writes the xlsa17 layout (``features`` d × n, ``labels`` n × 1
1-based, ``image_files`` n × 1 cell) that existing zero-shot code reads with ``scipy.io.loadmat``.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from safetensors import SafetensorError, safe_open
from scipy.io import savemat
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from acmr_core.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_image
from acmr_core.errors import ACMRError, DataError
from acmr_core.features.backbone import Backbone, BackboneIdentity
from acmr_core.fileio import atomic_write

log = logging.getLogger(__name__)

FEATURES_FORMAT = 1
UNLABELLED = -1
#: Individual "skipped" warnings logged before they are only counted (the summary always has the total).
MAX_LOGGED_FAILURES = 20


@dataclass
class ImageList:
    """Images to extract: paths relative to ``root``, integer labels (``-1`` = none) and class names."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]

    def absolute_paths(self) -> list[Path]:
        return [self.root / path for path in self.paths]


@dataclass
class FeatureSet:
    """Extracted features and everything needed to use them (and to know which backbone made them)."""

    features: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) int64, -1 = unlabelled
    image_paths: list[str]  # relative, '/'-separated
    class_names: list[str]
    identity: BackboneIdentity
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"path", "reason"}] of unreadable images

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.image_paths)
        if self.features.ndim != 2 or self.features.shape[0] != n or self.labels.shape[0] != n:
            raise DataError(
                f"inconsistent feature set: features {self.features.shape}, {self.labels.shape[0]} labels, "
                f"{n} image paths; the file is corrupt"
            )
        if n and (self.labels.max() >= len(self.class_names) or self.labels.min() < UNLABELLED):
            raise DataError(
                f"feature set labels fall outside its {len(self.class_names)} classes; the file is corrupt"
            )

    def __len__(self) -> int:
        return len(self.image_paths)


# --------------------------------------------------------------------------------------------- inputs


def find_images(source: str | Path, root: str | Path | None = None) -> ImageList:
    """An image folder (class sub-folders) or a list file, as an :class:`ImageList`."""
    source = Path(source).expanduser()
    if source.is_dir():
        return scan_image_folder(source)
    if source.is_file():
        return read_image_list(source, root)
    raise DataError(f"--images {source}: no such folder or list file")


def scan_image_folder(folder: Path) -> ImageList:
    """Every image under ``folder``; the first path component below it names the class."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    images = [path for path in files if path.suffix.lower() in IMAGE_EXTENSIONS]
    ignored = len(files) - len(images)
    if ignored:
        log.info("ignored %d file(s) in %s without an image extension", ignored, folder)
    if not images:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"no images found in {folder} (looked for {extensions})")
    relative = [path.relative_to(folder).as_posix() for path in images]
    class_of = [path.split("/", 1)[0] if "/" in path else None for path in relative]
    return _labelled(folder, relative, class_of)


def read_image_list(list_file: Path, root: str | Path | None = None) -> ImageList:
    """Parse a list file of ``relative/path [label]`` lines."""
    base = Path(root).expanduser() if root is not None else list_file.parent
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read image list {list_file}: {error}") from None
    paths: list[str] = []
    labels: list[str | None] = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path, label = _split_list_line(entry, base)
        paths.append(path)
        labels.append(label)
    if not paths:
        raise DataError(f"image list {list_file} names no images (expected lines of 'relative/path [label]')")
    return _labelled(base, paths, labels)


def _split_list_line(entry: str, base: Path) -> tuple[str, str | None]:
    if "\t" in entry:
        path, label = (part.strip() for part in entry.split("\t", 1))
        return path, label or None
    parts = entry.rsplit(None, 1)
    # A path with spaces and no label: the whole line names an existing file.
    if len(parts) == 1 or (base / entry).is_file():
        return entry, None
    return parts[0], parts[1]


def _labelled(root: Path, paths: list[str], label_names: Sequence[str | None]) -> ImageList:
    names = {name for name in label_names if name is not None}
    # Numeric labels ("1".."200") sort as numbers, so class k is "k"; names sort alphabetically.
    numeric = all(name.lstrip("-").isdigit() for name in names)
    class_names = sorted(names, key=int if numeric and names else str)
    index = {name: position for position, name in enumerate(class_names)}
    labels = np.array(
        [index[name] if name is not None else UNLABELLED for name in label_names], dtype=np.int64
    )
    return ImageList(root=root, paths=list(paths), labels=labels, class_names=class_names)


# --------------------------------------------------------------------------------------------- extraction


class _ImageDataset(Dataset):
    """Decodes and preprocesses one image per item; a failure is returned (not raised) to be counted."""

    def __init__(
        self, paths: Sequence[Path], transform: Callable[[Any], torch.Tensor], max_pixels: int
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.transform(load_image(self.paths[index], self.max_pixels)), None
        except ACMRError as error:
            return index, None, str(error)
        except Exception as error:  # a transform failure on one odd image must not stop a long run
            return index, None, f"{self.paths[index].name}: {type(error).__name__}: {error}"


def _collate(
    items: list[tuple[int, torch.Tensor | None, str | None]],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    kept = [(index, tensor) for index, tensor, _ in items if tensor is not None]
    failures = [(index, message or "unreadable") for index, tensor, message in items if tensor is None]
    batch = torch.stack([tensor for _, tensor in kept]) if kept else None
    return [index for index, _ in kept], batch, failures


def extract_paths(
    backbone: Backbone,
    paths: Sequence[Path],
    batch_size: int | None = None,
    workers: int = 0,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Features of the images at ``paths``.

    Returns ``(features, kept_indices, failures)``: ``features[i]`` belongs to ``paths[kept_indices[i]]``;
    ``failures`` lists ``(index, one-line reason)`` of the images that could not be read (each is logged).
    Images are batched in order (``paths[0:b]``, ``paths[b:2b]``…), which is what lets a sharded run give the
    same floats (:mod:`acmr_core.features.sharding`). ``on_batch(n)`` is told how many images each
    batch settled.
    """
    dataset = _ImageDataset(paths, backbone.transform, max_pixels)
    loader = DataLoader(
        dataset,
        batch_size=batch_size or backbone.batch_size,
        shuffle=False,
        num_workers=max(0, workers),
        collate_fn=_collate,
        pin_memory=backbone.device.type == "cuda",
        persistent_workers=False,
    )
    features = np.empty((len(dataset), backbone.feature_dim), dtype=np.float32)
    kept: list[int] = []
    failures: list[tuple[int, str]] = []
    with tqdm(total=len(dataset), desc="extracting", unit="img", disable=not progress or None) as bar:
        for indices, batch, batch_failures in loader:
            if batch is not None:
                features[len(kept) : len(kept) + len(indices)] = backbone.features_from_tensor(batch)
                kept.extend(indices)
            for index, reason in batch_failures:
                _warn_skipped(len(failures), paths[index], reason)
                failures.append((index, reason))
            bar.update(len(indices) + len(batch_failures))
            if on_batch is not None:
                on_batch(len(indices) + len(batch_failures))
    return features[: len(kept)], np.asarray(kept, dtype=np.int64), failures


def _warn_skipped(already: int, path: Path, reason: str) -> None:
    if already < MAX_LOGGED_FAILURES:
        log.warning("skipped unreadable image %s: %s", path, reason)
    elif already == MAX_LOGGED_FAILURES:
        log.warning("more unreadable images; they are counted in the summary and listed in the features file")


def extract_features(
    backbone: Backbone,
    images: ImageList,
    batch_size: int | None = None,
    workers: int = 0,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FeatureSet:
    """Extract every readable image of ``images``; unreadable ones are skipped, warned about and recorded."""
    features, kept, failures = extract_paths(
        backbone, images.absolute_paths(), batch_size, workers, progress, max_pixels
    )
    return feature_set_of(images, backbone.identity, features, kept, failures)


def feature_set_of(
    images: ImageList,
    identity: BackboneIdentity,
    features: np.ndarray,
    kept: np.ndarray,
    failures: Sequence[tuple[int, str]],
) -> FeatureSet:
    """The :class:`FeatureSet` of an extraction over ``images`` (``kept``/``failures`` index its paths)."""
    if len(kept) == 0:
        raise DataError(f"none of the {len(images.paths)} images under {images.root} could be read")
    return FeatureSet(
        features=features,
        labels=images.labels[kept],
        image_paths=[images.paths[index] for index in kept],
        class_names=list(images.class_names),
        identity=identity,
        skipped=[{"path": images.paths[index], "reason": reason} for index, reason in failures],
    )


# --------------------------------------------------------------------------------------------- files


def save_features(path: str | Path, feature_set: FeatureSet) -> Path:
    """Write ``feature_set`` to one ``.safetensors`` file (atomically: a crash never leaves half a file)."""
    path = Path(path)
    metadata = {
        "acmr_features": str(FEATURES_FORMAT),
        "backbone": json.dumps(feature_set.identity.to_dict()),
        "class_names": json.dumps(feature_set.class_names),
        "image_paths": json.dumps(feature_set.image_paths),
        "skipped": json.dumps(feature_set.skipped),
    }
    data = safetensors.numpy.save(
        {"features": feature_set.features, "labels": feature_set.labels}, metadata=metadata
    )
    atomic_write(path, canonical_safetensors(data))
    return path


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` with its header keys sorted, so that the same tensors and metadata always give the same bytes.

    safetensors writes the header metadata in the order of a Rust hash map, which is seeded per process: two
    processes saving identical features would otherwise write different files. Only the JSON header is
    rewritten (offsets are explicit in it); it stays padded to 8 bytes, as safetensors writes it.
    """
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    ordered = {key: header[key] for key in sorted(header)}
    if "__metadata__" in ordered:
        ordered["__metadata__"] = dict(sorted(ordered["__metadata__"].items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def load_features(path: str | Path, expected: BackboneIdentity | None = None) -> FeatureSet:
    """Read a features file; with ``expected``, refuse features made by another backbone."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"features file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable features file ({error}); extract it again") from None
    if metadata.get("acmr_features") != str(FEATURES_FORMAT) or not {"features", "labels"} <= tensors.keys():
        raise DataError(
            f"{path} is not an acmr features file (format {FEATURES_FORMAT}); make it with acmr extract"
        )
    try:
        feature_set = FeatureSet(
            features=tensors["features"],
            labels=tensors["labels"],
            image_paths=list(json.loads(metadata["image_paths"])),
            class_names=list(json.loads(metadata["class_names"])),
            identity=BackboneIdentity.from_dict(json.loads(metadata["backbone"])),
            skipped=list(json.loads(metadata.get("skipped", "[]"))),
        )
    except (KeyError, json.JSONDecodeError, TypeError) as error:
        raise DataError(
            f"{path} has damaged metadata ({type(error).__name__}: {error}); extract it again"
        ) from None
    if expected is not None:
        expected.ensure_matches(feature_set.identity, context=str(path))
    return feature_set


def write_res101_mat(path: str | Path, feature_set: FeatureSet) -> Path:
    """The xlsa17 ``res101.mat`` layout: features d × n, labels n × 1 (1-based), image_files n × 1 cell."""
    if (feature_set.labels == UNLABELLED).any():
        missing = int((feature_set.labels == UNLABELLED).sum())
        raise DataError(
            f"res101.mat needs a label for every image but {missing} have none; "
            "put images in class sub-folders or give labels in the list file"
        )
    image_files = np.empty((len(feature_set), 1), dtype=object)
    for row, image_path in enumerate(feature_set.image_paths):
        image_files[row, 0] = image_path
    content = {
        "features": feature_set.features.T,  # float32; xlsa17 used float64, which adds nothing here
        "labels": (feature_set.labels + 1).astype(np.float64).reshape(-1, 1),  # 1-based doubles, as in xlsa17
        "image_files": image_files,
    }
    path = Path(path)
    # The temporary-file wrapper delegates attributes, which scipy's `dir()` check misses: pass the real file.
    atomic_write(path, lambda handle: savemat(handle.file, content, do_compression=False))
    return path
