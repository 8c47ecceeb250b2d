"""Synthetic datasets in the xlsa17 layout, for tests and benchmarks (no real image features are available).

Public interface:

* :func:`write_synthetic_xlsa17` ``(root, dataset="CUB", *, seed=0, feature_dim=2048, images_per_class=None,
  xlsa17_dir=None) -> Path`` — writes ``root/<dataset>/res101.mat`` and ``att_splits.mat`` (+ class-list and
  attribute-name files) and returns that folder.
* :func:`default_xlsa17_dir` — ``$ACMR_XLSA17`` or ``../shared/data/xlsa17`` beside the repository.
* ``python -m acmr_core.data.synthetic --dataset CUB --out DIR`` does the same from the shell.

Class metadata: the real attribute matrix, class names, seen/unseen classes (``trainvalclasses.txt`` /
``testclasses.txt``) and validation split 1 (``trainclasses1.txt`` / ``valclasses1.txt``) of the chosen
dataset when the xlsa17 metadata folder is present; otherwise a small built-in world (20 classes x 16
attributes). Image counts default to the real split sizes (CUB: 7057 trainval, 1764 test seen, 2967 test
unseen).

Features (how they are made, and why the task is hard), see :class:`Difficulty`:

* each class has a code in a small "visual concept" space (24-d): a random 2-layer tanh network of its
  standardised attributes (the part an attribute-to-latent model can learn and transfer to unseen classes)
  plus a class-specific random offset unrelated to attributes (irreducible for unseen classes);
* seen classes share an extra offset along one concept direction, and unseen images vary more — the seen-class
  bias of real ImageNet-pretrained features (the backbone knows the seen classes better);
* each image = its class code + concept-space noise, embedded by a fixed random map into 2048 dimensions, plus
  per-dimension noise, then ReLU (ResNet pooled features are non-negative and sparse). Noise in the concept
  space does not average out over the 2048 dimensions, as real pose/background variation does not.

A classifier that ignores attributes has no way to name an unseen class (U = 0). On synthetic CUB a ridge
attribute-to-feature-prototype baseline scores ZSL ~28 % and GZSL H ~21 (U 12, S 82): a strong seen bias.

Layouts follow the real files: train_loc/val_loc are written (covering trainval ∪ test_seen, the xlsa17
convention) only where the real ``att_splits.mat`` has them; for CUB, whose copy lacks them, the class-list
files are written instead.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from acmr_core.data.xlsa17 import mat_cell, mat_strings, read_name_list
from acmr_core.errors import DataError
from acmr_core.fileio import atomic_write

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME_FILES = ("allclasses.txt", "attributes.txt", "predicates.txt", "attributes.mat")


def default_xlsa17_dir() -> Path:
    return Path(os.environ.get("ACMR_XLSA17", REPO_ROOT.parent / "shared" / "data" / "xlsa17"))


@dataclass
class ClassMetadata:
    attributes: np.ndarray  # (C, A), L2-normalised rows like xlsa17's att columns
    class_names: list[str]
    seen: np.ndarray
    unseen: np.ndarray
    train: np.ndarray  # validation split 1: train classes (subset of seen)
    val: np.ndarray  # validation split 1: val classes (subset of seen)
    split_counts: tuple[int, int, int] | None  # real (trainval, test_seen, test_unseen) sizes
    has_locs: bool  # the real att_splits.mat carries train_loc/val_loc
    source: Path | None


def _indices(names: list[str], index: dict[str, int], path: Path) -> np.ndarray:
    missing = [n for n in names if n not in index]
    if missing:
        raise DataError(f"{path}: class '{missing[0]}' is not in allclasses_names")
    return np.array(sorted(index[n] for n in names), dtype=np.int64)


def real_metadata(folder: Path) -> ClassMetadata:
    """Attributes, names and class splits of a real xlsa17 metadata folder."""
    mat = scipy.io.loadmat(str(folder / "att_splits.mat"))
    attributes = np.asarray(mat["att"], dtype=np.float32).T
    class_names = mat_strings(mat["allclasses_names"])
    index = {name: i for i, name in enumerate(class_names)}
    seen = _indices(read_name_list(folder / "trainvalclasses.txt"), index, folder / "trainvalclasses.txt")
    unseen = _indices(read_name_list(folder / "testclasses.txt"), index, folder / "testclasses.txt")
    train = _indices(read_name_list(folder / "trainclasses1.txt"), index, folder / "trainclasses1.txt")
    val = _indices(read_name_list(folder / "valclasses1.txt"), index, folder / "valclasses1.txt")
    counts = tuple(int(np.asarray(mat[k]).size) for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc"))
    return ClassMetadata(
        attributes,
        class_names,
        seen,
        unseen,
        train,
        val,
        counts,
        "train_loc" in mat and "val_loc" in mat,
        folder,
    )


def builtin_metadata(seed: int = 0, n_classes: int = 20, n_attributes: int = 16) -> ClassMetadata:
    """A small world: random binary-ish attributes, 15 seen (10 train + 5 val) and 5 unseen classes."""
    rng = np.random.default_rng(seed + 7919)
    raw = (rng.random((n_classes, n_attributes)) < 0.4).astype(np.float32) + 0.05 * rng.random(
        (n_classes, n_attributes), dtype=np.float32
    )
    attributes = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    order = rng.permutation(n_classes)
    n_unseen = max(n_classes // 4, 1)
    seen, unseen = np.sort(order[n_unseen:]), np.sort(order[:n_unseen])
    n_val = max(seen.size // 3, 1)
    shuffled = rng.permutation(seen)
    return ClassMetadata(
        attributes=attributes,
        class_names=[f"class_{i:02d}" for i in range(n_classes)],
        seen=seen,
        unseen=unseen,
        train=np.sort(shuffled[n_val:]),
        val=np.sort(shuffled[:n_val]),
        split_counts=None,
        has_locs=True,
        source=None,
    )


@dataclass(frozen=True)
class Difficulty:
    """How the features are made; noise levels are relative to the attribute-explained part (std 1).

    Classes live in a ``latent_dim``-dimensional "visual concept" space that is then embedded non-linearly in
    ``feature_dim`` dimensions: noise in the concept space does not average out over 2048 feature dimensions,
    as real image variation (pose, background) does not.
    """

    latent_dim: int = 24
    class_noise: float = 0.5  # class-specific offset not explained by attributes
    image_noise: float = 1.0  # per-image variation in concept space
    seen_shift: float = 0.5  # offset along one shared concept direction for all seen classes
    unseen_noise_factor: float = 1.2  # unseen images vary more (the backbone knows seen classes better)
    feature_noise: float = 0.3  # per-dimension noise in feature space


def _class_codes(meta: ClassMetadata, rng: np.random.Generator, difficulty: Difficulty) -> np.ndarray:
    """Per-class concept codes (C, k): a random 2-layer tanh network of the attributes + unexplained
    offset."""
    att = meta.attributes
    standardised = (att - att.mean(0)) / np.maximum(att.std(0), 1e-6)
    hidden = 128
    w1 = rng.standard_normal((att.shape[1], hidden)) / np.sqrt(att.shape[1])
    w2 = rng.standard_normal((hidden, difficulty.latent_dim)) / np.sqrt(hidden)
    explained = np.tanh(1.5 * standardised @ w1) @ w2
    codes = explained / explained.std()
    codes += difficulty.class_noise * rng.standard_normal(codes.shape)
    codes[meta.seen] += difficulty.seen_shift * rng.standard_normal(difficulty.latent_dim)
    return codes.astype(np.float32)


def _features(
    labels: np.ndarray,
    codes: np.ndarray,
    meta: ClassMetadata,
    feature_dim: int,
    rng: np.random.Generator,
    difficulty: Difficulty,
) -> np.ndarray:
    """(D, N) non-negative features: ReLU of a fixed random embedding of noisy concept codes."""
    k = difficulty.latent_dim
    embedding = rng.standard_normal((k, feature_dim)).astype(np.float32) / np.sqrt(k)
    offset = 0.5 * rng.standard_normal(feature_dim).astype(np.float32)
    image_noise = np.full(codes.shape[0], difficulty.image_noise, dtype=np.float32)
    image_noise[meta.unseen] *= difficulty.unseen_noise_factor
    features = np.empty((feature_dim, labels.size), dtype=np.float32)
    for start in range(0, labels.size, 2048):
        block = labels[start : start + 2048]
        concept = (
            codes[block] + rng.standard_normal((block.size, k), dtype=np.float32) * image_noise[block, None]
        )
        pre = np.tanh(concept) @ embedding * 2.0 + offset
        pre += difficulty.feature_noise * rng.standard_normal(pre.shape, dtype=np.float32)
        features[:, start : start + block.size] = np.maximum(pre, 0.0).T
    return features


def _balanced_labels(classes: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.resize(rng.permutation(classes), total)
    return rng.permutation(labels)


def _loc(indices: np.ndarray, n_images: int) -> np.ndarray:
    dtype = np.uint16 if n_images < 65535 else np.uint32
    return (np.sort(indices) + 1).astype(dtype).reshape(-1, 1)


def write_synthetic_xlsa17(
    root: str | Path,
    dataset: str = "CUB",
    *,
    seed: int = 0,
    feature_dim: int = 2048,
    images_per_class: int | None = None,
    xlsa17_dir: str | Path | None = None,
    difficulty: Difficulty | None = None,
) -> Path:
    """Write a synthetic xlsa17-layout dataset to ``root/<dataset>/`` and return that folder."""
    rng = np.random.default_rng(seed)
    source = Path(xlsa17_dir) if xlsa17_dir is not None else default_xlsa17_dir()
    real_folder = source / dataset
    if (real_folder / "att_splits.mat").is_file() and (real_folder / "trainclasses1.txt").is_file():
        meta = real_metadata(real_folder)
    else:
        log.info("no xlsa17 metadata at %s; using the built-in 20-class world", real_folder)
        meta = builtin_metadata(seed)

    n_seen_cls, n_unseen_cls = meta.seen.size, meta.unseen.size
    if images_per_class is not None:
        per_seen_test = max(round(0.2 * images_per_class), 1)
        counts = (
            n_seen_cls * (images_per_class - per_seen_test),
            n_seen_cls * per_seen_test,
            n_unseen_cls * images_per_class,
        )
    elif meta.split_counts is not None:
        counts = meta.split_counts
    else:
        counts = (n_seen_cls * 48, n_seen_cls * 12, n_unseen_cls * 60)
    labels = np.concatenate(
        [
            _balanced_labels(meta.seen, counts[0], rng),
            _balanced_labels(meta.seen, counts[1], rng),
            _balanced_labels(meta.unseen, counts[2], rng),
        ]
    )
    n_images = labels.size
    shuffle = rng.permutation(n_images)  # images are stored in a random order, like a real res101.mat
    labels = labels[shuffle]
    position = np.empty(n_images, dtype=np.int64)
    position[shuffle] = np.arange(n_images)
    bounds = np.cumsum((0, *counts))
    trainval, test_seen, test_unseen = (position[bounds[i] : bounds[i + 1]] for i in range(3))

    difficulty = difficulty or Difficulty()
    features = _features(labels, _class_codes(meta, rng, difficulty), meta, feature_dim, rng, difficulty)

    folder = Path(root) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    image_files = [f"synthetic/{meta.class_names[c]}/{i:06d}.jpg" for i, c in enumerate(labels)]
    res101 = {
        "features": features,
        "labels": (labels + 1).astype(np.float64).reshape(-1, 1),
        "image_files": mat_cell(image_files),
    }
    # Every file atomically: an interrupted run leaves no truncated .mat for the next `--synthetic` to load.
    atomic_write(
        folder / "res101.mat", lambda handle: scipy.io.savemat(handle.file, res101, do_compression=False)
    )
    splits = {
        "att": meta.attributes.T.astype(np.float64),
        "allclasses_names": mat_cell(meta.class_names),
        "trainval_loc": _loc(trainval, n_images),
        "test_seen_loc": _loc(test_seen, n_images),
        "test_unseen_loc": _loc(test_unseen, n_images),
    }
    if meta.has_locs:
        # xlsa17 convention: train_loc ∪ val_loc = trainval ∪ test_seen, split by validation class.
        seen_images = np.concatenate([trainval, test_seen])
        splits["train_loc"] = _loc(seen_images[np.isin(labels[seen_images], meta.train)], n_images)
        splits["val_loc"] = _loc(seen_images[np.isin(labels[seen_images], meta.val)], n_images)
    atomic_write(folder / "att_splits.mat", lambda handle: scipy.io.savemat(handle.file, splits))

    class_lists = {
        "trainvalclasses.txt": meta.seen,
        "testclasses.txt": meta.unseen,
        "trainclasses1.txt": meta.train,
        "valclasses1.txt": meta.val,
    }
    for name, classes in class_lists.items():
        atomic_write(folder / name, ("\n".join(meta.class_names[c] for c in classes) + "\n").encode("utf-8"))
    if meta.source is not None:
        for name in NAME_FILES:
            if (meta.source / name).is_file():
                atomic_write(folder / name, (meta.source / name).read_bytes())
    log.info("wrote synthetic %s (%d images, %d-d) to %s", dataset, n_images, feature_dim, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic xlsa17-layout dataset.")
    parser.add_argument("--dataset", default="CUB", help="CUB, SUN, AWA1, AWA2 (real metadata) or any name")
    parser.add_argument("--out", required=True, type=Path, help="root folder; writes OUT/<DATASET>/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-dim", type=int, default=2048)
    parser.add_argument("--images-per-class", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder = write_synthetic_xlsa17(
        args.out,
        args.dataset,
        seed=args.seed,
        feature_dim=args.feature_dim,
        images_per_class=args.images_per_class,
    )
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
