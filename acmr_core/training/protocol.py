"""The full GZSL protocol: train with settings chosen on validation, evaluate once, over seeds.

Public interface:

* :func:`train_gzsl` ``(features, labels, class_attributes, seen_classes, unseen_classes, *, preset or
  arch + train, device, seed, selection="validation", val_seen_classes=None, val_unseen_classes=None)
  -> TrainedModel`` — what the bundle builder calls on its own features (``features``/``labels`` = the
  training images).
* :func:`evaluate_trained` — U, S, H, ZSL top-1 of a trained model on test images;
  :func:`evaluate_on_data` — the same on a dataset's test splits.
* :func:`run_protocol` ``(data: ZSLData, seeds, ...) -> dict`` — what ``acmr train`` runs.

Model selection (``selection="validation"``, the default) never looks at test images: the classifier epochs
and calibration gamma (and, with ``choose_epochs=True``, which ``run_protocol`` uses unless given ``epochs``,
the number of ACMR epochs) are chosen on the validation split (:mod:`acmr_core.training.selection`); ACMR
(:mod:`acmr_core.training.fit`) and classifier are then retrained on all training images and evaluated once.
``selection="reference"`` runs the reference's fixed classifier schedule (Adam 5e-4, beta1 0.3, batch 32, 50
epochs, last incomplete batch dropped, no calibration) and reports its last epoch — NOT the reference's
best-test-epoch choice, which used the test set.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from acmr_core.data.xlsa17 import FeatureScaler, ZSLData
from acmr_core.errors import DataError
from acmr_core.model.config import SELECTIONS, ACMRConfig, TrainConfig, make_configs
from acmr_core.model.gzsl import fit_gzsl_classifier
from acmr_core.model.predictor import TrainedModel
from acmr_core.model.saved_model import save_trained
from acmr_core.training.fit import fit_acmr, resolve_precision, scale_epochs, torch_device
from acmr_core.training.metrics import aggregate_seeds, gzsl_scores, zsl_top1
from acmr_core.training.selection import default_validation_classes, select_on_validation

log = logging.getLogger(__name__)


def _check_labels(labels: np.ndarray, seen: np.ndarray, n_classes: int) -> None:
    if labels.size == 0:
        raise DataError("no training images were given")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataError(f"labels range {labels.min()}..{labels.max()} but there are {n_classes} classes")
    stray = np.setdiff1d(np.unique(labels), seen)
    if stray.size:
        raise DataError(f"training images of class {int(stray[0])} which is not in the seen classes")


def train_gzsl(
    features: Any,
    labels: Any,
    class_attributes: Any,
    seen_classes: Any,
    unseen_classes: Any,
    *,
    preset: str = "CUB",
    arch: ACMRConfig | None = None,
    train: TrainConfig | None = None,
    device: torch.device | str = "auto",
    seed: int = 0,
    selection: str = "validation",
    val_seen_classes: Any = None,
    val_unseen_classes: Any = None,
    class_names: list[str] | None = None,
    progress: bool = True,
    choose_epochs: bool = False,
) -> TrainedModel:
    """Train ACMR + GZSL classifier on training images of the seen classes, choosing settings without test
    data.

    ``features``: raw (unscaled) training-image features ``(N, D)``; ``labels``: 0-based rows of
    ``class_attributes`` ``(C, A)``, all in ``seen_classes``. ``unseen_classes`` have attributes only.
    With ``selection="validation"`` the validation classes are ``val_seen_classes``/``val_unseen_classes``
    (e.g. xlsa17 split 1) or, when omitted, a seeded random split of the seen classes. ``choose_epochs``
    (validation selection only) chooses the number of ACMR epochs there too, up to ``train.epochs``; the
    returned model's ``train.epochs`` is the chosen number.
    """
    if selection not in SELECTIONS:
        raise DataError(f"unknown selection '{selection}'; choose one of {', '.join(SELECTIONS)}")
    if choose_epochs and selection != "validation":
        raise DataError("ACMR epochs can only be chosen with selection='validation'")
    device = torch_device(device)
    features = np.asarray(features.cpu() if isinstance(features, Tensor) else features, dtype=np.float32)
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels, dtype=np.int64).ravel()
    attributes = np.asarray(class_attributes, dtype=np.float32)
    seen = np.unique(np.asarray(seen_classes, dtype=np.int64))
    unseen = np.unique(np.asarray(unseen_classes, dtype=np.int64))
    if features.ndim != 2 or features.shape[0] != labels.size:
        raise DataError(f"features {features.shape} do not match {labels.size} labels")
    if attributes.ndim != 2:
        raise DataError(
            f"class attributes must be a (classes, attributes) matrix, got shape {attributes.shape}"
        )
    _check_labels(labels, seen, attributes.shape[0])
    if np.intersect1d(seen, unseen).size:
        raise DataError("a class cannot be both seen and unseen")
    if arch is None or train is None:
        preset_arch, preset_train = make_configs(
            preset,
            feature_dim=features.shape[1],
            attribute_dim=attributes.shape[1],
            num_classes=attributes.shape[0],
        )
        arch, train = arch or preset_arch, train or preset_train
    data_dims = (features.shape[1], attributes.shape[1], attributes.shape[0])
    if (arch.feature_dim, arch.attribute_dim, arch.num_classes) != data_dims:
        raise DataError(
            f"config expects {arch.feature_dim}-d features, {arch.attribute_dim} attributes, "
            f"{arch.num_classes} "
            f"classes; data has {features.shape[1]}, {attributes.shape[1]}, {attributes.shape[0]}"
        )

    started = time.perf_counter()
    if selection == "validation":
        if val_seen_classes is None or val_unseen_classes is None:
            val_seen, val_unseen = default_validation_classes(
                seen, unseen.size, seen.size + unseen.size, seed
            )
            split_source = "random class split of the seen classes"
        else:
            val_seen = np.unique(np.asarray(val_seen_classes, dtype=np.int64))
            val_unseen = np.unique(np.asarray(val_unseen_classes, dtype=np.int64))
            split_source = "given"
        chosen = select_on_validation(
            features,
            labels,
            attributes,
            val_seen,
            val_unseen,
            arch,
            train,
            device,
            seed,
            progress,
            choose_epochs,
        )
        chosen["split"] = split_source
        cls_epochs, gamma, temperature = chosen["classifier_epochs"], chosen["gamma"], chosen["temperature"]
        cls_kwargs = train.classifier_optimizer()
        if choose_epochs:
            # The same per-epoch schedule as the validation run, truncated: the preset warm-ups are kept, not
            # rescaled, so the final ACMR trains exactly the schedule whose validation H was chosen.
            train = replace(train, epochs=chosen["acmr_epochs"])
    else:
        chosen = {
            "mode": "reference",
            "note": "reference fixed classifier schedule, last epoch, no calibration",
        }
        cls_epochs, gamma, temperature = train.cls_reference_epochs, 0.0, 1.0
        cls_kwargs = train.classifier_optimizer(reference=True)

    scaler = FeatureScaler().fit(features)  # fitted on the training images only
    scaled = scaler.transform(features)
    model = fit_acmr(scaled, labels, attributes, arch, train, device, seed, progress, "ACMR")
    classifier = fit_gzsl_classifier(
        model,
        scaled,
        labels,
        attributes,
        unseen,
        num_classes=attributes.shape[0],
        seen_samples=train.cls_seen_samples,
        unseen_samples=train.cls_unseen_samples,
        epochs=cls_epochs,
        device=device,
        seed=seed,
        **cls_kwargs,
    )
    chosen["train_seconds"] = time.perf_counter() - started
    return TrainedModel(
        model=model,
        classifier=classifier,
        arch=arch,
        train=train,
        class_attributes=attributes,
        seen_classes=seen,
        unseen_classes=unseen,
        gamma=float(gamma),
        classifier_epochs=int(cls_epochs),
        selection=chosen,
        scaler=scaler,
        class_names=class_names,
        temperature=float(temperature),
    )


def evaluate_trained(
    trained: TrainedModel,
    seen_features: Any,
    seen_labels: Any,
    unseen_features: Any,
    unseen_labels: Any,
) -> dict[str, float]:
    """GZSL U/S/H (with the model's calibration), uncalibrated H, and ZSL top-1, in percent, on raw
    features."""
    seen_labels = np.asarray(seen_labels, dtype=np.int64)
    unseen_labels = np.asarray(unseen_labels, dtype=np.int64)
    scores_seen = trained.scores(seen_features).cpu().numpy()
    scores_unseen = trained.scores(unseen_features).cpu().numpy()
    result = gzsl_scores(
        seen_labels,
        scores_seen.argmax(1),
        unseen_labels,
        scores_unseen.argmax(1),
        trained.seen_classes,
        trained.unseen_classes,
    )
    plain_seen = trained.scores(seen_features, gamma=0.0).cpu().numpy().argmax(1)
    plain_unseen = trained.scores(unseen_features, gamma=0.0).cpu().numpy().argmax(1)
    uncalibrated = gzsl_scores(
        seen_labels, plain_seen, unseen_labels, plain_unseen, trained.seen_classes, trained.unseen_classes
    )
    result["H_uncalibrated"] = uncalibrated["H"]
    result["zsl_top1"] = zsl_top1(unseen_labels, scores_unseen, trained.unseen_classes)
    result["gamma"] = trained.gamma
    return result


def evaluate_on_data(trained: TrainedModel, data: ZSLData) -> dict[str, float]:
    """Score a trained model on a dataset's test_seen / test_unseen images."""
    if trained.class_attributes.shape != data.attributes.shape:
        raise DataError(
            f"the model knows {trained.class_attributes.shape[0]} classes x "
            f"{trained.class_attributes.shape[1]} "
            f"attributes but the data has {data.attributes.shape[0]} x {data.attributes.shape[1]}"
        )
    if data.features.shape[1] != trained.arch.feature_dim:
        raise DataError(
            f"the model expects {trained.arch.feature_dim}-d features, the data has {data.features.shape[1]}"
        )
    return evaluate_trained(
        trained,
        data.features[data.test_seen],
        data.labels[data.test_seen],
        data.features[data.test_unseen],
        data.labels[data.test_unseen],
    )


def run_protocol(
    data: ZSLData,
    seeds: list[int],
    *,
    preset: str | None = None,
    device: torch.device | str = "auto",
    selection: str = "validation",
    epochs: int | None = None,
    use_vsa: bool = True,
    use_iem: bool = True,
    reparameterization: str = "reference",
    precision: str = "fp32",
    progress: bool = True,
    save_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate on ``data`` once per seed; returns the metrics dict written to ``metrics.json``.

    With ``selection="validation"`` and no ``epochs``, the number of ACMR epochs is chosen per seed on the
    validation split (up to the preset's); ``epochs`` gives a fixed schedule instead (warm-ups scaled).
    ``precision`` may be ``"auto"`` (bf16 where the device has native bfloat16, else fp32).
    """
    device = torch_device(device)
    preset = preset or data.dataset
    arch, train = make_configs(
        preset,
        feature_dim=data.features.shape[1],
        attribute_dim=data.attributes.shape[1],
        num_classes=data.attributes.shape[0],
        use_vsa=use_vsa,
        use_iem=use_iem,
        reparameterization=reparameterization,
    )
    if epochs is not None and epochs != train.epochs:
        train = scale_epochs(train, epochs)
    train = replace(train, precision=resolve_precision(precision, device))
    choose_epochs = selection == "validation" and epochs is None
    if selection == "validation" and not data.has_validation_split:
        raise DataError(
            f"{data.dataset}: no validation split (train_loc/val_loc or trainclasses1.txt/valclasses1.txt); "
            "add them or use --selection reference"
        )
    val_seen = np.unique(data.labels[data.train]) if data.has_validation_split else None
    val_unseen = np.unique(data.labels[data.val]) if data.has_validation_split else None
    started = time.perf_counter()
    per_seed = []
    for seed in tqdm(seeds, desc="seeds", unit="seed", disable=not progress or len(seeds) < 2):
        seed_started = time.perf_counter()
        trained = train_gzsl(
            data.features[data.trainval],
            data.labels[data.trainval],
            data.attributes,
            data.seen_classes,
            data.unseen_classes,
            arch=arch,
            train=train,
            device=device,
            seed=seed,
            selection=selection,
            val_seen_classes=val_seen,
            val_unseen_classes=val_unseen,
            class_names=data.class_names,
            progress=progress,
            choose_epochs=choose_epochs,
        )
        metrics = evaluate_on_data(trained, data)
        entry = {
            "seed": seed,
            **metrics,
            "acmr_epochs": trained.train.epochs,
            "classifier_epochs": trained.classifier_epochs,
            "selection": trained.selection,
            "wall_seconds": time.perf_counter() - seed_started,
        }
        if save_dir is not None:
            path = Path(save_dir) / f"seed_{seed}"
            save_trained(path, trained)
            entry["model"] = str(path)
        log.info(
            "seed %d: U %.2f S %.2f H %.2f ZSL %.2f",
            seed,
            metrics["U"],
            metrics["S"],
            metrics["H"],
            metrics["zsl_top1"],
        )
        per_seed.append(entry)
    summary = aggregate_seeds(per_seed)
    return {
        "dataset": data.dataset,
        "U": summary["U"]["mean"],
        "S": summary["S"]["mean"],
        "H": summary["H"]["mean"],
        "zsl_top1": summary["zsl_top1"]["mean"],
        "std": {k: summary[k]["std"] for k in ("U", "S", "H", "zsl_top1", "H_uncalibrated")},
        "H_uncalibrated": summary["H_uncalibrated"]["mean"],
        "per_seed": per_seed,
        "seeds": list(seeds),
        "selection": selection,
        "validation_split": data.val_split_source or None,
        "epochs": train.epochs,
        "epoch_selection": "validation" if choose_epochs else "fixed",
        "acmr_epochs": [e["acmr_epochs"] for e in per_seed],
        "classifier_epochs": [e["classifier_epochs"] for e in per_seed],
        "wall_seconds": time.perf_counter() - started,
        "device": str(device),
        "precision": train.precision,
        "arch": arch.to_dict(),
        "train": train.to_dict(),
    }
