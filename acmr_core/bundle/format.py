"""The bundle format: one folder with everything needed to serve a trained ACMR model.

Layout (format version :data:`FORMAT_VERSION`; every part is JSON or safetensors — no pickle anywhere)::

    manifest.json          format, version, created, provenance, and {file: {sha256, bytes}} for every part
    backbone.json          BackboneIdentity of the feature extractor the model was trained on
    catalog.json           classes (names, descriptions, seen/unseen), grouped attribute names, matrix
    scaler.safetensors     MinMax feature scaler (fitted on the training images only)
    model.json             ACMR architecture + training schedule
    model.safetensors      ACMR weights (complete state_dict, incl. the fixed eval IEM permutation)
    classifier.json        GZSL classifier: calibration gamma, probability temperature (absent: 1), epochs,
                           how they were selected and fitted
    classifier.safetensors GZSL linear classifier weights
    latent.json            image ids of the plotted images, placement settings
    latent.safetensors     latent-space cache: visual latents (sample per class) + labels, semantic latents
                           per class, their 2-D UMAP coordinates, the reference set used to place new points,
                           and the posterior (mu, logvar) of every training image so the classifier can be
                           re-fitted for user-defined classes without the features
    familiarity.json       "outside my world" threshold and how it was calibrated (held-out training images)
    familiarity.safetensors  per-feature mean and scale of the training images (acmr_core.bundle.familiarity)
    backbone.safetensors   optional: the learnt part of a seeded random backbone (the demo bundle's), which
                           ``Bundle.create_backbone`` puts over the seeded weights
    results.json           optional: per-class test results and each plotted test image's answer (a bundle
                           from ``acmr bundle --run``; acmr_core.bundle.test_results)

The manifest's ``inputs`` says what the model reads: ``"images"`` (through its backbone; a manifest without
the key is one) or ``"features"`` (precomputed features such as xlsa17's res101.mat: no backbone, and
``backbone.json`` then identifies the features file, not a network).

:func:`load_bundle` verifies the manifest, the format version, each part's size and SHA-256, then the
contents' mutual consistency; any problem raises :class:`~acmr_core.errors.BundleError` with a one-line
reason.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch

from acmr_core.bundle.bundle import LEARNT_BACKBONE_PART, Bundle, LatentCache
from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.bundle.familiarity import Familiarity
from acmr_core.bundle.test_results import RESULTS_PART, check_test_results
from acmr_core.data.xlsa17 import FeatureScaler
from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_BUNDLE
from acmr_core.errors import ACMRError, BackboneError, BundleError, DataError, quote_value, shorten
from acmr_core.features.backbone import BackboneIdentity
from acmr_core.fileio import file_sha256, jsonable, read_json, write_json
from acmr_core.model.calibration import check_temperature
from acmr_core.model.config import ACMRConfig, TrainConfig
from acmr_core.model.gzsl import GZSLClassifier
from acmr_core.model.network import ACMR
from acmr_core.model.predictor import TrainedModel
from acmr_core.model.saved_model import cpu_state, load_state, read_tensors
from acmr_core.runtime import resolve_device
from acmr_core.version import __version__

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "acmr-bundle"
#: Version 2 added the familiarity parts; version-1 bundles are refused with a request to rebuild.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
PARTS = (
    "backbone.json",
    "catalog.json",
    "scaler.safetensors",
    "model.json",
    "model.safetensors",
    "classifier.json",
    "classifier.safetensors",
    "latent.json",
    "latent.safetensors",
    "familiarity.json",
    "familiarity.safetensors",
)
#: Parts a bundle may have; where it has one, the manifest lists it and it is checked like the rest.
OPTIONAL_PARTS = (LEARNT_BACKBONE_PART, RESULTS_PART)
#: The manifest's ``inputs``: what the model reads (see the module docstring).
INPUTS = ("images", "features")


def listed_parts(files: Mapping[str, Any]) -> tuple[str, ...]:
    """Every part a manifest's ``files`` table must have: the required ones and the optional ones it lists."""
    return (*PARTS, *(part for part in OPTIONAL_PARTS if part in files))


def check_output_dir(directory: str | Path) -> Path:
    """Refuse an output folder that holds something other than a bundle (it would be replaced)."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target} is a file; choose a folder for the bundle")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise BundleError(f"{target} exists and is not a bundle; choose an empty or new --out folder")
    return target


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write ``bundle`` to ``directory`` (replacing a previous bundle there) and return the path.

    Parts are written to a temporary sibling folder, the manifest last, then swapped into place, so an
    interrupted save never leaves a half-written bundle under the target name.
    """
    target = check_output_dir(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        trained = bundle.trained
        write_json(staging / "backbone.json", bundle.identity.to_dict())
        write_json(staging / "catalog.json", bundle.catalog.to_dict())
        save_numpy({k: np.asarray(v, np.float32) for k, v in trained.scaler.state_dict().items()},
                   str(staging / "scaler.safetensors"))  # fmt: skip
        write_json(staging / "model.json", {"arch": trained.arch.to_dict(), "train": trained.train.to_dict()})
        save_torch(cpu_state(trained.model), str(staging / "model.safetensors"))
        write_json(
            staging / "classifier.json",
            {
                "num_classes": int(trained.classifier.num_classes),
                "gamma": float(trained.gamma),
                "temperature": float(trained.temperature),
                "epochs": int(trained.classifier_epochs),
                "selection": trained.selection,
            },
        )
        save_torch(cpu_state(trained.classifier), str(staging / "classifier.safetensors"))
        latent_meta = {
            "image_ids": list(bundle.latent.image_ids),
            "neighbours": int(bundle.latent.neighbours),
            "placement": "inverse-distance-weighted k-NN interpolation in latent space",
        }
        write_json(staging / "latent.json", latent_meta)
        save_numpy(bundle.latent.arrays(), str(staging / "latent.safetensors"))
        if bundle.familiarity is None:
            raise BundleError(
                "a bundle needs familiarity statistics (acmr_core.bundle.familiarity.fit_familiarity)"
            )
        write_json(staging / "familiarity.json", bundle.familiarity.meta())
        save_numpy(bundle.familiarity.arrays(), str(staging / "familiarity.safetensors"))
        parts = list(PARTS)
        if bundle.learnt_backbone is not None:
            shutil.copyfile(bundle.learnt_backbone, staging / LEARNT_BACKBONE_PART)
            parts.append(LEARNT_BACKBONE_PART)
        if bundle.results is not None:
            write_json(staging / RESULTS_PART, bundle.results)
            parts.append(RESULTS_PART)
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "inputs": "features" if bundle.features_only else "images",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "acmr_version": __version__,
            "provenance": jsonable(bundle.provenance),
            "files": {
                part: {"sha256": file_sha256(staging / part), "bytes": (staging / part).stat().st_size}
                for part in parts
            },
        }
        write_json(staging / MANIFEST, manifest)
        # mkdtemp makes a private (0700) folder; a bundle is meant to be readable (e.g. by a container user).
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    bundle.path, bundle.manifest = target, manifest
    if bundle.learnt_backbone is not None:
        bundle.learnt_backbone = target / LEARNT_BACKBONE_PART
    log.info("bundle written to %s", target)
    return target


def _swap_into_place(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_manifest(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise BundleError(
            f"no bundle at {directory} (not a folder); build one with 'acmr build-demo' or 'acmr bundle'"
        )
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{directory} has no {MANIFEST}; it is not a bundle (or an interrupted copy of one)"
        )
    manifest = read_json(path, advice="rebuild or re-copy the bundle")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an ACMR bundle manifest (format is not '{BUNDLE_FORMAT}')")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle {directory.name} has format version {quote_value(version)}; this acmr reads version "
            f"{FORMAT_VERSION} — "
            "rebuild the bundle with this version (or use the acmr that wrote it)"
        )
    if not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{path} has no 'files' table; the manifest is corrupt")
    return manifest


def verify_bundle(directory: str | Path) -> dict[str, Any]:
    """Check manifest, version, and every part's presence, size and SHA-256; return the manifest."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    files = manifest["files"]
    for part in listed_parts(files):
        entry = files.get(part)
        if not isinstance(entry, dict) or "sha256" not in entry or "bytes" not in entry:
            raise BundleError(
                f"bundle {directory.name}: manifest does not list {part}; the manifest is corrupt"
            )
        path = directory / part
        if not path.is_file():
            raise BundleError(f"bundle {directory.name} is missing {part}; rebuild or re-copy the bundle")
        size = path.stat().st_size
        if size != entry["bytes"]:
            state = "truncated" if size < entry["bytes"] else "longer than recorded"
            raise BundleError(
                f"bundle {directory.name}: {part} is {state} ({size} of {entry['bytes']} bytes); "
                "re-copy the bundle"
            )
        if file_sha256(path) != entry["sha256"]:
            raise BundleError(
                f"bundle {directory.name}: {part} is corrupt (SHA-256 mismatch); re-copy the bundle"
            )
    return manifest


#: Parts whose loaders refuse NaN and infinite values themselves, naming the value (catalog attributes, the
#: calibration gamma); every other part is parsed strictly (the project never writes NaN), so a NaN or an
#: overflowing number there cannot reach code that would turn it into a traceback (``int(inf)``).
_VALUES_CHECKED = {"catalog.json", "classifier.json"}


def _load_json(directory: Path, part: str) -> Any:
    return read_json(
        directory / part,
        f"bundle {directory.name}: {part}",
        advice="rebuild or re-copy the bundle",
        allow_non_finite=part in _VALUES_CHECKED,
    )


def _load_tensors(directory: Path, part: str) -> dict[str, torch.Tensor]:
    return read_tensors(directory / part, f"bundle {directory.name}: {part} is not a valid safetensors file")


def _require(tensors: Mapping[str, torch.Tensor], names: Sequence[str], where: str) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise BundleError(f"{where} lacks {', '.join(missing)}; the bundle is incomplete")


def load_bundle(directory: str | Path, device: str | torch.device = "auto") -> Bundle:
    """Load and validate a bundle folder; every problem is a one-line :class:`BundleError`."""
    directory = Path(directory)
    manifest = verify_bundle(directory)
    name = directory.name
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)

    try:
        identity = BackboneIdentity.from_dict(_load_json(directory, "backbone.json"))
        catalog = ClassCatalog.from_dict(
            _load_json(directory, "catalog.json"), source=f"bundle {name} catalog.json"
        )
        model_meta = _load_json(directory, "model.json")
        arch = ACMRConfig.from_dict(model_meta.get("arch") if isinstance(model_meta, dict) else None)
        train = TrainConfig.from_dict(model_meta.get("train") if isinstance(model_meta, dict) else None)
    except (DataError, BackboneError) as error:
        raise BundleError(f"bundle {name}: {shorten(error)}") from None

    scaler_state = _load_tensors(directory, "scaler.safetensors")
    _require(scaler_state, ("data_min", "data_max"), f"bundle {name}: scaler.safetensors")
    try:
        scaler = FeatureScaler.from_state_dict({k: v.numpy() for k, v in scaler_state.items()})
    except DataError as error:
        raise BundleError(f"bundle {name}: {shorten(error)}") from None

    # Cross-part consistency: one line naming the first thing that does not fit.
    checks = (
        (arch.feature_dim == identity.feature_dim,
         f"model expects {arch.feature_dim}-d features, backbone gives {identity.feature_dim}"),
        (scaler_state["data_min"].numel() == arch.feature_dim,
         "scaler and model disagree on the feature size"),
        (arch.attribute_dim == len(catalog.attribute_names),
         f"model expects {arch.attribute_dim} attributes, catalog has {len(catalog.attribute_names)}"),
        (arch.num_classes == catalog.num_classes,
         f"model has {arch.num_classes} classes, catalog has {catalog.num_classes}"),
    )  # fmt: skip
    for ok, reason in checks:
        if not ok:
            raise BundleError(f"bundle {name} is inconsistent: {reason}")

    model = ACMR(arch)
    load_state(
        model,
        _load_tensors(directory, "model.safetensors"),
        f"bundle {name}: model.safetensors does not fit its config",
    )
    classifier_meta = _load_json(directory, "classifier.json")
    gamma = classifier_meta.get("gamma") if isinstance(classifier_meta, dict) else None
    if not isinstance(gamma, (int, float)) or not np.isfinite(gamma):  # NaN parses as JSON, and scores NaN
        raise BundleError(f"bundle {name}: classifier.json lacks a numeric 'gamma' (a finite number)")
    epochs = classifier_meta.get("epochs", train.cls_max_epochs)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:  # NaN parses here: see above
        raise BundleError(f"bundle {name}: classifier.json 'epochs' is not a whole number")
    try:  # bundles made before the temperature existed score with T = 1
        temperature = check_temperature(classifier_meta.get("temperature", 1.0))
    except ACMRError as error:
        raise BundleError(f"bundle {name}: classifier.json {error}") from None
    classifier = GZSLClassifier(arch.latent_dim, catalog.num_classes)
    load_state(
        classifier,
        _load_tensors(directory, "classifier.safetensors"),
        f"bundle {name}: classifier.safetensors does not fit its config",
    )

    latent = _load_latent(directory, catalog, arch.latent_dim)
    familiarity = Familiarity.from_parts(
        _load_json(directory, "familiarity.json"),
        {k: v.numpy() for k, v in _load_tensors(directory, "familiarity.safetensors").items()},
        f"bundle {name}",
    )
    if familiarity.feature_dim != arch.feature_dim:
        raise BundleError(
            f"bundle {name} is inconsistent: familiarity statistics are {familiarity.feature_dim}-d, "
            f"the model expects {arch.feature_dim}-d features"
        )
    trained = TrainedModel(
        model=model.to(torch_device).eval(),
        classifier=classifier.to(torch_device).eval(),
        arch=arch,
        train=train,
        class_attributes=catalog.attribute_matrix,
        seen_classes=catalog.seen_classes,
        unseen_classes=catalog.unseen_classes,
        gamma=float(classifier_meta["gamma"]),
        classifier_epochs=epochs,
        selection=dict(classifier_meta.get("selection") or {}),
        scaler=scaler,
        class_names=list(catalog.names),
        temperature=temperature,
    )
    provenance = manifest.get("provenance") if isinstance(manifest.get("provenance"), dict) else {}
    learnt = directory / LEARNT_BACKBONE_PART if LEARNT_BACKBONE_PART in manifest["files"] else None
    inputs = manifest.get("inputs", "images")
    if inputs not in INPUTS:
        raise BundleError(f"bundle {name}: manifest 'inputs' is {quote_value(inputs)}, not one of {INPUTS}")
    results = None
    if RESULTS_PART in manifest["files"]:
        where = f"bundle {name}: {RESULTS_PART}"
        results = check_test_results(
            _load_json(directory, RESULTS_PART), catalog, latent.visual_labels, where
        )
    return Bundle(
        identity, catalog, trained, latent, provenance, directory, manifest, familiarity, learnt,
        features_only=inputs == "features", results=results,
    )  # fmt: skip


def _load_latent(directory: Path, catalog: ClassCatalog, latent_dim: int) -> LatentCache:
    name = directory.name
    meta = _load_json(directory, "latent.json")
    tensors = _load_tensors(directory, "latent.safetensors")
    where = f"bundle {name}: latent.safetensors"
    fields = ("visual", "visual_labels", "visual_xy", "semantic", "semantic_xy", "reference", "reference_xy",
              "train_mu", "train_logvar", "train_labels")  # fmt: skip
    _require(tensors, fields, where)
    arrays = {k: tensors[k].numpy() for k in fields}
    if not isinstance(meta, dict) or not isinstance(meta.get("image_ids"), list):
        raise BundleError(f"bundle {name}: latent.json lacks the 'image_ids' list")
    n_visual, n_classes = arrays["visual"].shape[0], catalog.num_classes
    expected = {
        "visual": (n_visual, latent_dim),
        "visual_labels": (n_visual,),
        "visual_xy": (n_visual, 2),
        "semantic": (n_classes, latent_dim),
        "semantic_xy": (n_classes, 2),
        "reference": (arrays["reference"].shape[0], latent_dim),
        "reference_xy": (arrays["reference"].shape[0], 2),
        "train_mu": (arrays["train_mu"].shape[0], latent_dim),
        "train_logvar": arrays["train_mu"].shape,
        "train_labels": (arrays["train_mu"].shape[0],),
    }
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != tuple(shape):
            raise BundleError(
                f"{where}: '{key}' has shape {tuple(arrays[key].shape)}, expected {tuple(shape)}"
            )
    if len(meta["image_ids"]) != n_visual:
        raise BundleError(
            f"bundle {name}: latent.json lists {len(meta['image_ids'])} image ids for {n_visual} latents"
        )
    for key in ("visual_labels", "train_labels"):
        labels = arrays[key]
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise BundleError(f"{where}: '{key}' has class indices outside 0..{n_classes - 1}")
    missing_seen = np.setdiff1d(catalog.seen_classes, arrays["train_labels"])
    if missing_seen.size:
        raise BundleError(
            f"{where}: no training latents for seen class {catalog.names[int(missing_seen[0])]!r}"
        )
    try:
        neighbours = int(meta.get("neighbours", 8))
    except (TypeError, ValueError):
        raise BundleError(f"bundle {name}: latent.json 'neighbours' is not a number") from None
    return LatentCache(
        visual=arrays["visual"].astype(np.float32),
        visual_labels=arrays["visual_labels"].astype(np.int64),
        image_ids=tuple(str(i) for i in meta["image_ids"]),
        visual_xy=arrays["visual_xy"].astype(np.float32),
        semantic=arrays["semantic"].astype(np.float32),
        semantic_xy=arrays["semantic_xy"].astype(np.float32),
        reference=arrays["reference"].astype(np.float32),
        reference_xy=arrays["reference_xy"].astype(np.float32),
        train_mu=arrays["train_mu"].astype(np.float32),
        train_logvar=arrays["train_logvar"].astype(np.float32),
        train_labels=arrays["train_labels"].astype(np.int64),
        neighbours=neighbours,
    )


def list_bundles(root: str | Path = CHECKPOINTS_DIR) -> list[Path]:
    """Sub-folders of ``root`` that look like bundles (have a manifest), sorted by name; not validated."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


def default_bundle_path() -> Path:
    """``checkpoints/demo-world`` under the working directory, else the one shipped beside this package."""
    local = CHECKPOINTS_DIR / DEFAULT_BUNDLE
    if (local / MANIFEST).is_file():
        return local
    shipped = Path(__file__).resolve().parents[2] / CHECKPOINTS_DIR / DEFAULT_BUNDLE
    return shipped if (shipped / MANIFEST).is_file() else local
