"""A bundle from a training run on precomputed features: what ``acmr bundle --run RUN --data-root ROOT`` does.

``acmr train`` trains on xlsa17-layout features (``res101.mat`` + ``att_splits.mat``) that no backbone here
can reproduce (the literature's Caffe ResNet-101), so its models cannot read images. They can still be
explored: this bundles one of the run's saved models (``RUN/models/seed_N``) with

* the class catalog of the data it was trained on (xlsa17 class names and attribute names);
* its latent cache: **every test image** (test_seen and test_unseen), placed on the 2-D map in advance;
* its per-class test results (:mod:`acmr_core.bundle.test_results`), which must agree with the U and S that
  ``acmr train`` wrote to ``RUN/metrics.json`` for that seed;

and records that it reads precomputed features, not images (``Bundle.features_only``; ``backbone.json``
identifies the features file by its SHA-256). No training happens here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acmr_core.bundle.bundle import Bundle
from acmr_core.bundle.format import check_output_dir, save_bundle
from acmr_core.bundle.test_results import compute_test_results
from acmr_core.data.xlsa17 import FEATURES_FILE, ZSLData, load_xlsa17
from acmr_core.errors import BundleError
from acmr_core.features.backbone import BackboneIdentity
from acmr_core.fileio import file_sha256, read_json
from acmr_core.model.predictor import TrainedModel
from acmr_core.model.saved_model import load_trained
from acmr_core.pipelines.bootstrap_steps import xlsa17_catalog
from acmr_core.pipelines.build import LabelledFeatures, assemble_bundle
from acmr_core.runtime import resolve_device

log = logging.getLogger(__name__)

#: The model name a features-only bundle's ``backbone.json`` records (no network made these features here).
PRECOMPUTED = "precomputed"
#: How far (percentage points) the recomputed U or S may be from ``metrics.json``'s before the build is
#: refused: a different device or bf16 matrix products may flip the odd near-tied image, a different model
#: or data changes far more.
RUN_AGREEMENT = 0.5


@dataclass(frozen=True)
class RunModel:
    """One model of a training run: where it is, the run's metrics and the seed's own entry."""

    directory: Path
    seed: int
    metrics: dict[str, Any]
    entry: dict[str, Any]

    @property
    def dataset(self) -> str:
        return str(self.metrics.get("dataset", ""))


def find_run_model(run: str | Path, seed: int | None = None) -> RunModel:
    """The model of ``seed`` (default: the run's first) in an ``acmr train --out`` folder, or a
    BundleError."""
    run = Path(run)
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise BundleError(f"{run} has no metrics.json; pass the --out folder of 'acmr train' as --run")
    metrics = read_json(metrics_path, advice="re-run 'acmr train'")
    per_seed = metrics.get("per_seed") if isinstance(metrics, dict) else None
    if not isinstance(per_seed, list) or not per_seed or not all(isinstance(e, dict) for e in per_seed):
        raise BundleError(f"{metrics_path} lists no per-seed results; is it from 'acmr train'?")
    seeds = [entry.get("seed") for entry in per_seed]
    chosen = seeds[0] if seed is None else seed
    if chosen not in seeds:
        raise BundleError(f"run {run.name} has no model of seed {seed}; its seeds are {seeds}")
    directory = run / "models" / f"seed_{chosen}"
    if not directory.is_dir():
        raise BundleError(f"{directory} is missing; 'acmr train' saves each seed's model there")
    return RunModel(directory, int(chosen), metrics, per_seed[seeds.index(chosen)])


def features_identity(features_file: Path, feature_dim: int) -> BackboneIdentity:
    """What a features-only bundle records in place of a backbone: the features file, by its SHA-256."""
    return BackboneIdentity(
        model_name=PRECOMPUTED,
        weight_source=f"{features_file.parent.name}/{features_file.name} (precomputed features)",
        weights_sha256=file_sha256(features_file),
        transform={},
        feature_dim=feature_dim,
    )


def check_model_fits(trained: TrainedModel, data: ZSLData, where: str) -> None:
    """Refuse, in one line, a model that was not trained on ``data`` (classes, attributes, feature size)."""
    if trained.class_attributes.shape != data.attributes.shape:
        raise BundleError(
            f"{where} knows {trained.class_attributes.shape[0]} classes x "
            f"{trained.class_attributes.shape[1]} attributes, the data {data.attributes.shape[0]} x "
            f"{data.attributes.shape[1]}: not its data"
        )
    if trained.arch.feature_dim != data.features.shape[1]:
        raise BundleError(
            f"{where} reads {trained.arch.feature_dim}-d features, the data has {data.features.shape[1]}-d"
        )
    if not np.allclose(trained.class_attributes, data.attributes, atol=1e-5):
        raise BundleError(f"{where} was trained on other class attributes than {data.dataset}'s")
    if not np.array_equal(np.sort(trained.seen_classes), data.seen_classes):
        raise BundleError(f"{where} was trained with other seen classes than {data.dataset}'s split")


def bundle_from_run(
    run: str | Path,
    out_dir: str | Path | None,
    *,
    data_root: str | Path | None = None,
    seed: int | None = None,
    projection: str = "umap",
    device: str = "auto",
) -> Bundle:
    """Bundle one model of an ``acmr train`` run with its data's test images (and save it to ``out_dir``).

    ``data_root`` defaults to the one ``metrics.json`` records; ``projection`` as for
    :func:`acmr_core.viz.latent_space.fit_projection` (``"pca"``: a quick stand-in for tests).
    """
    if out_dir is not None:
        check_output_dir(out_dir)  # fail before the work, not after
    model = find_run_model(run, seed)
    root = Path(data_root) if data_root is not None else Path(str(model.metrics.get("data_root", "")))
    if not model.dataset:
        raise BundleError(f"{Path(run) / 'metrics.json'} does not name its dataset")
    data = load_xlsa17(root, model.dataset)
    trained = load_trained(model.directory, device=resolve_device(device))
    check_model_fits(trained, data, f"the model in {model.directory}")
    catalog = xlsa17_catalog(data)
    trained.class_names = list(catalog.names)

    test = np.sort(np.concatenate([data.test_seen, data.test_unseen]))
    image_ids = data.image_files or [f"image {i + 1}" for i in range(data.labels.size)]  # 1-based: the locs'
    record = {
        "builder": "acmr_core.pipelines.from_run.bundle_from_run",
        "name": Path(out_dir).name if out_dir is not None else f"{model.dataset}-seed{model.seed}",
        "dataset": model.dataset,
        "run": str(run),
        "data_root": str(root),
        "seed": model.seed,
        "plotted": "every test image (test_seen and test_unseen)",
        "metrics": {key: model.entry.get(key) for key in ("U", "S", "H", "zsl_top1")},
        "caveat": "This model reads precomputed features, not images: explore its test images instead.",
    }
    bundle = assemble_bundle(
        trained,
        catalog,
        features_identity(root / model.dataset / FEATURES_FILE, data.features.shape[1]),
        training=LabelledFeatures(data.features[data.trainval], data.labels[data.trainval], ()),
        plotted=LabelledFeatures(data.features[test], data.labels[test], tuple(image_ids[i] for i in test)),
        projection=projection,
        seed=model.seed,
        provenance=record,
    )
    bundle.features_only = True
    bundle.results = score_test_images(bundle, data.features[test], data.labels[test], model)
    if out_dir is not None:
        save_bundle(bundle, out_dir)
    return bundle


def score_test_images(
    bundle: Bundle, features: np.ndarray, labels: np.ndarray, model: RunModel
) -> dict[str, Any]:
    """Per-class results on the test images, checked against the run's own U and S for this seed."""
    with torch.inference_mode():
        predicted = bundle.trained.predict(features)
    results = compute_test_results(
        labels,
        predicted,
        bundle.catalog,
        bundle.assess_familiarity(features),
        record={
            "dataset": model.dataset,
            "seed": model.seed,
            "gamma": bundle.gamma,
            "run_metrics": {key: model.entry.get(key) for key in ("U", "S", "H")},
        },
    )
    for key in ("U", "S"):
        expected = model.entry.get(key)
        if isinstance(expected, (int, float)) and abs(results["metrics"][key] - expected) > RUN_AGREEMENT:
            raise BundleError(
                f"recomputed {key} {results['metrics'][key]:.2f} differs from metrics.json's {expected:.2f} "
                f"for seed {model.seed}: the data at the given --data-root is not what the run was trained on"
            )
    log.info(
        "test results: U %.2f S %.2f H %.2f (metrics.json: U %s S %s)",
        results["metrics"]["U"], results["metrics"]["S"], results["metrics"]["H"],
        model.entry.get("U"), model.entry.get("S"),
    )  # fmt: skip
    return results
