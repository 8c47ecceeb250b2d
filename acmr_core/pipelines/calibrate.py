"""Fitting a bundle's probability temperature on fresh labelled images of its classes, without retraining.

Every bundle gets a temperature from its validation split while it is built
(:mod:`acmr_core.training.selection`), which may only soften the probabilities: that split has no image of
the real unseen classes. A world that can draw fresh images of all its classes (the demo world) fits the
temperature on them instead — ``acmr build-demo`` before saving, or afterwards for a bundle already built,
whose ``classifier.json`` and the manifest's record of it are rewritten so the bundle still verifies. The
temperature minimises the negative log-likelihood of those images
(:func:`acmr_core.model.calibration.fit_temperature`). Nothing else changes: the ranking of every image, hence
every top-1 and what gamma does, is the same.

Public interface:

* :func:`fit_bundle_temperature` ``(bundle, features, labels, record) -> dict`` — fit in memory, report
  (``acmr build-demo`` calls it before saving, on :func:`calibration_renders`).
* :func:`recalibrate_bundle` ``(directory, features, labels, record) -> dict`` — fit, write, report.
* :func:`calibrate_demo_bundle` ``(directory, seed=CALIBRATION_SEED, per_class=20) -> dict`` — the same on
  fresh renders of a demo-world bundle's classes, with a render seed its build never used (recorded in its
  ``demo_world.used_seeds``, so ``acmr evaluate`` refuses it afterwards).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from acmr_core.bundle.bundle import Bundle
from acmr_core.bundle.format import MANIFEST, load_bundle, verify_bundle
from acmr_core.data.demo_world import DemoWorldRecord, FeatureExtractor, default_world, extract_renders
from acmr_core.errors import BundleError
from acmr_core.fileio import file_sha256, read_json, write_json
from acmr_core.model.calibration import calibration_report, fit_temperature

log = logging.getLogger(__name__)

#: Render seed of the demo bundle's calibration renders: no bundle, gallery, example, backbone or evaluation
#: seed (acmr_core.data.demo_world) and none of the benchmarks'.
CALIBRATION_SEED = 13
#: Fresh renders per class that fit the temperature (one scalar: a few hundred images pin it down).
CALIBRATION_PER_CLASS = 20


def fit_bundle_temperature(
    bundle: Bundle, features: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
) -> dict[str, Any]:
    """Fit ``bundle``'s temperature (in memory) on raw ``features`` of labelled images (class indices
    ``labels``); the fit's record — the temperature, ``record`` (how the images were drawn) and their
    calibration before (``T = 1``) and after — goes into ``trained.selection["calibration"]`` (saved with
    ``classifier.json``) and is returned."""
    labels = np.asarray(labels, dtype=np.int64)
    trained = bundle.trained
    trained.temperature = 1.0
    scores = bundle.scores(features)  # log-probabilities at T = 1 (after the bundle's gamma)
    temperature = fit_temperature(scores, labels)
    before = calibration_report(np.exp(scores), labels)
    trained.temperature = temperature
    after = calibration_report(bundle.probabilities(features), labels)
    fitted = {"method": "temperature on held-out images", "temperature": temperature, **dict(record),
              "before": before, "after": after}  # fmt: skip
    trained.selection = {**trained.selection, "calibration": fitted}
    log.info("bundle %s: temperature %.4g (ECE %.3f -> %.3f)", bundle.name, temperature, before["ece"],
             after["ece"])  # fmt: skip
    return fitted


def recalibrate_bundle(
    directory: str | Path, features: np.ndarray, labels: np.ndarray, record: Mapping[str, Any]
) -> dict[str, Any]:
    """:func:`fit_bundle_temperature` for the bundle saved at ``directory``, written into its
    ``classifier.json`` (``temperature`` and ``selection.calibration``) with the manifest's record of that
    part updated, so the bundle still verifies."""
    directory = Path(directory)
    bundle = load_bundle(directory, device="cpu")
    fitted = fit_bundle_temperature(bundle, features, labels, record)
    manifest = verify_bundle(directory)
    path = directory / "classifier.json"
    meta = read_json(path, f"bundle {directory.name}: classifier.json")
    if not isinstance(meta, dict):
        raise BundleError(f"bundle {directory.name}: classifier.json is not a JSON object")
    meta["temperature"] = float(fitted["temperature"])
    meta["selection"] = bundle.trained.selection
    write_json(path, meta)
    manifest["files"]["classifier.json"] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    write_json(directory / MANIFEST, manifest)
    return fitted


def calibration_renders(
    bundle: Bundle, backbone: FeatureExtractor, seed: int, per_class: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(features, labels, record)`` of ``per_class`` fresh renders of each class of a demo-world bundle with
    render ``seed``, refused if the bundle's build used that seed."""
    used = DemoWorldRecord.from_provenance(bundle.provenance)
    if used is None:
        raise BundleError(f"bundle {bundle.name} is not a demo-world bundle (no demo_world record)")
    if seed in used.used_seeds:
        raise BundleError(f"render seed {seed} was used to build bundle {bundle.name}; choose another")
    world = default_world().subset(list(bundle.catalog.names))
    features, labels, _ = extract_renders(
        world, backbone, seed, per_class, progress=progress, description="calibration renders",
        size=used.render_size,
    )  # fmt: skip
    record = {"images": "fresh demo-world renders", "render_seed": seed, "per_class": per_class}
    return features, labels, record


def calibrate_demo_bundle(
    directory: str | Path,
    *,
    seed: int = CALIBRATION_SEED,
    per_class: int = CALIBRATION_PER_CLASS,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Fit a saved demo-world bundle's temperature on ``per_class`` fresh renders of each of its classes drawn
    with render ``seed`` (refused if the bundle's build used it), and record the seed as used."""
    directory = Path(directory)
    bundle = load_bundle(directory, device=device)
    backbone = bundle.create_backbone(device=device)
    features, labels, record = calibration_renders(bundle, backbone, seed, per_class, progress)
    fitted = recalibrate_bundle(directory, features, labels, record)
    _record_used_seed(directory, seed)
    return fitted


def _record_used_seed(directory: Path, seed: int) -> None:
    """Add ``seed`` to the manifest's ``demo_world.used_seeds`` (the provenance is not a hashed part)."""
    manifest = verify_bundle(directory)
    demo = manifest["provenance"]["demo_world"]
    demo["used_seeds"] = sorted({*demo.get("used_seeds", []), int(seed)})
    write_json(directory / MANIFEST, manifest)
