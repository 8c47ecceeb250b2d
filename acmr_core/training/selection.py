"""Model selection on the validation split: settings chosen without ever looking at a test image.

Validation split 1 (train classes seen, val classes unseen; a stratified 20 % of the train-class images held
out as "seen test") trains an ACMR, then the GZSL classifier, recording validation U/S/H after every
classifier epoch for each calibration gamma; the best (epochs, gamma) by validation H is kept
(:func:`select_on_validation`). With ``choose_epochs=True`` the number of ACMR epochs is chosen there too:
validation H is scored every few epochs while the validation ACMR trains, which stops by
:class:`acmr_core.training.fit.EpochStopper`'s patience rule, and the best-scoring number of epochs is kept.
:func:`default_validation_classes` draws the validation classes when a dataset has no validation split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from acmr_core.data.xlsa17 import FeatureScaler, holdout_split
from acmr_core.errors import DataError
from acmr_core.model.calibration import fit_temperature
from acmr_core.model.config import ACMRConfig, TrainConfig
from acmr_core.model.gzsl import GZSLClassifier, fit_gzsl_classifier, gzsl_selection_table, predict_scores
from acmr_core.model.network import ACMR
from acmr_core.runtime import as_tensor
from acmr_core.training.fit import EpochStopper, fit_acmr

log = logging.getLogger(__name__)


def default_validation_classes(
    seen: np.ndarray, n_unseen: int, n_total: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A random class split of the seen classes keeping the seen/unseen ratio (at least one class each
    side)."""
    n_val = round(seen.size * n_unseen / max(n_total, 1))
    n_val = min(max(n_val, 1), seen.size - 1)
    shuffled = np.random.default_rng(seed).permutation(seen)
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def select_on_validation(
    features: np.ndarray,
    labels: np.ndarray,
    class_attributes: np.ndarray,
    val_seen: np.ndarray,
    val_unseen: np.ndarray,
    arch: ACMRConfig,
    train: TrainConfig,
    device: torch.device,
    seed: int,
    progress: bool = True,
    choose_epochs: bool = False,
) -> dict[str, Any]:
    """Choose classifier epochs and calibration gamma by validation H (train classes seen, val classes
    unseen) — and, with ``choose_epochs``, the number of ACMR epochs (:class:`EpochStopper`)."""
    train_rows = np.flatnonzero(np.isin(labels, val_seen))
    unseen_rows = np.flatnonzero(np.isin(labels, val_unseen))
    if train_rows.size == 0 or unseen_rows.size == 0:
        raise DataError("the validation split has no images for its train or val classes")
    kept, held = holdout_split(labels, train_rows, train.val_seen_holdout, seed)
    if held.size == 0:
        raise DataError("validation train classes need at least two images each to hold out seen test images")
    scaler = FeatureScaler().fit(features[kept])  # fitted on the validation training images only
    x_kept = scaler.transform(features[kept])
    x_held = as_tensor(scaler.transform(features[held]), device, torch.float32)
    x_unseen = as_tensor(scaler.transform(features[unseen_rows]), device, torch.float32)
    y_held = as_tensor(labels[held], device, torch.int64)
    y_unseen = as_tensor(labels[unseen_rows], device, torch.int64)
    n_classes = class_attributes.shape[0]
    seen_mask = torch.zeros(n_classes, device=device)
    seen_mask[as_tensor(val_seen, device, torch.int64)] = 1.0
    # Only the validation classes compete (the real unseen classes have no training data at this stage).
    candidates = torch.full((n_classes,), float("-inf"), device=device)
    candidates[as_tensor(np.concatenate([val_seen, val_unseen]), device, torch.int64)] = 0.0
    gammas = as_tensor(train.cls_gamma_grid, device, torch.float32)

    def score(model: ACMR) -> dict[str, Any]:
        """Fit the validation classifier on ``model``'s latents; its best (epochs, gamma) and U/S/H."""
        with torch.no_grad():
            z_held, z_unseen = model.visual_latent(x_held), model.visual_latent(x_unseen)
        table = torch.zeros(train.cls_max_epochs, gammas.numel(), 3, device=device)
        weights: list[dict[str, torch.Tensor]] = []  # each epoch's classifier (a few KB), for the temperature

        def record(epoch: int, classifier: GZSLClassifier) -> None:
            weights.append({k: v.detach().clone() for k, v in classifier.state_dict().items()})
            with torch.no_grad():
                table[epoch] = gzsl_selection_table(
                    classifier(z_held) + candidates,
                    y_held,
                    classifier(z_unseen) + candidates,
                    y_unseen,
                    seen_mask,
                    gammas,
                )

        fit_gzsl_classifier(
            model,
            x_kept,
            labels[kept],
            class_attributes,
            val_unseen,
            num_classes=n_classes,
            seen_samples=train.cls_seen_samples,
            unseen_samples=train.cls_unseen_samples,
            epochs=train.cls_max_epochs,
            device=device,
            seed=seed,
            on_epoch_end=record,
            **train.classifier_optimizer(),
        )
        table_np = table.cpu().numpy() * 100.0  # the single host sync of a scoring
        # argmax over the flattened (epoch, gamma) grid: ties go to the earliest epoch, then smallest gamma.
        epoch_index, gamma_index = np.unravel_index(int(np.argmax(table_np[:, :, 2])), table_np.shape[:2])
        u, s, h = table_np[epoch_index, gamma_index]
        uncalibrated = table_np[:, 0, 2] if train.cls_gamma_grid[0] == 0.0 else None
        gamma = float(train.cls_gamma_grid[gamma_index])
        chosen_classifier = GZSLClassifier(z_held.shape[1], n_classes).to(device)
        chosen_classifier.load_state_dict(weights[epoch_index])
        with torch.no_grad():
            held_scores, unseen_scores = (
                predict_scores(chosen_classifier(z) + candidates, seen_mask, gamma)
                for z in (z_held, z_unseen)
            )
        # The probabilities' temperature, fitted on the held-out seen images and on the "unseen" images at the
        # chosen epoch and gamma, each part on its own. The validation may soften the probabilities, never
        # sharpen them: its "unseen" classes are seen classes playing unseen, easier than the real unseen ones
        # (synthetic CUB: they asked for T = 0.81 while the real unseen answers were already overconfident at
        # T = 1), so T < 1 would claim a certainty no data about the real unseen classes backs. A world that
        # can show fresh images of all its classes fits T on them (acmr_core.pipelines.calibrate).
        parts = {
            "seen": fit_temperature(held_scores, y_held),
            "unseen": fit_temperature(unseen_scores, y_unseen),
        }
        pooled = fit_temperature(torch.cat((held_scores, unseen_scores)), torch.cat((y_held, y_unseen)))
        return {
            "classifier_epochs": int(epoch_index) + 1,
            "gamma": gamma,
            "temperature": max(1.0, *parts.values()),
            "temperature_fits": {**parts, "pooled": pooled},  # the pooled fit: recorded, not used
            "val_U": float(u),
            "val_S": float(s),
            "val_H": float(h),
            "val_H_uncalibrated_best": None if uncalibrated is None else float(uncalibrated.max()),
        }

    fit = (x_kept, labels[kept], class_attributes, arch, train, device, seed, progress, "ACMR (validation)")
    if choose_epochs:
        chosen = _choose_acmr_epochs(fit, score, EpochStopper.from_config(train))
    else:
        chosen = score(fit_acmr(*fit))
    return {
        "mode": "validation",
        **chosen,
        "val_seen_classes": int(val_seen.size),
        "val_unseen_classes": int(val_unseen.size),
        "val_images": {
            "train": int(kept.size),
            "seen_test": int(held.size),
            "unseen_test": int(unseen_rows.size),
        },
    }


def _choose_acmr_epochs(
    fit: tuple[Any, ...], score: Callable[[ACMR], dict[str, Any]], stopper: EpochStopper
) -> dict[str, Any]:
    """Train the validation ACMR (``fit_acmr(*fit)``), scoring it when ``stopper`` says so and stopping by its
    rule; the best score's classifier selection plus the chosen epochs and the validation curve."""
    curve: list[dict[str, Any]] = []
    best: dict[str, Any] = {}

    def on_epoch_end(epoch: int, model: ACMR) -> bool:
        done = epoch + 1
        if not stopper.scores_after(done):
            return False
        scored = score(model)
        curve.append({"epoch": done, **{k: scored[k] for k in ("val_H", "val_U", "val_S", "gamma")}})
        stop = stopper.observe(done, scored["val_H"])
        if stopper.best_epoch == done:
            best.clear()
            best.update(scored)
        log.info(
            "validation H after %d ACMR epochs: %.2f (chosen so far: %d)",
            done,
            scored["val_H"],
            stopper.best_epoch,
        )
        return stop

    fit_acmr(*fit, on_epoch_end=on_epoch_end)
    return {
        **best,
        "acmr_epochs": stopper.best_epoch,
        "acmr_epochs_trained": curve[-1]["epoch"],
        "validation_curve": curve,
        "stopping_rule": {
            "first": stopper.first,
            "every": stopper.every,
            "patience": stopper.patience,
            "min_delta": stopper.min_delta,
            "max_epochs": stopper.max_epochs,
        },
    }
