"""Fitting ACMR and the full GZSL protocol (validation-based model selection, retrain, seeds).

Public interface:

* :func:`fit_acmr` ``(features, labels, class_attributes, arch, train, device, seed, progress=True)
  -> ACMR`` — the ACMR training loop. Data stays on the device; batches are indexed on the device; the loss
  is never read back inside an epoch (one host sync per epoch, for the progress bar).
* :class:`TrainedModel` — ACMR + GZSL classifier + calibration gamma + scaler + class metadata, with
  ``latents()``, ``logits()``, ``scores()``, ``predict()`` on raw features.
* :func:`train_gzsl` ``(features, labels, class_attributes, seen_classes, unseen_classes, *, preset or
  arch + train, device, seed, selection="validation", val_seen_classes=None, val_unseen_classes=None)
  -> TrainedModel`` — what the bundle builder calls on its own features (``features``/``labels`` = the
  training images).
* :func:`evaluate_trained` — U, S, H, ZSL top-1 of a trained model on test images.
* :func:`run_protocol` ``(data: ZSLData, seeds, ...) -> dict`` — what ``acmr train`` runs.

Model selection (``selection="validation"``, the default) never looks at test images: validation split 1
(train classes seen, val classes unseen; a stratified 20 % of the train-class images held out as "seen test")
trains an ACMR, then the GZSL classifier, recording validation U/S/H after every classifier epoch for each
calibration gamma; the best (epochs, gamma) by validation H is kept; ACMR and classifier are then retrained on
all training images and evaluated once. With ``choose_epochs=True`` (what ``run_protocol`` does unless given
``epochs``) the number of ACMR epochs is chosen on the validation split too: validation H is scored every
few epochs while the validation ACMR trains, which stops by :class:`EpochStopper`'s patience rule, and the
final ACMR trains for the best-scoring number of epochs. ``selection="reference"`` runs the reference's fixed
classifier schedule (Adam 5e-4, beta1 0.3, batch 32, 50 epochs, last incomplete batch dropped, no
calibration) and reports its last epoch — NOT the reference's best-test-epoch choice, which used the test
set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from acmr_core.data.xlsa17 import FeatureScaler, ZSLData, holdout_split
from acmr_core.errors import DataError
from acmr_core.model.config import (
    PRECISION_CHOICES,
    SELECTIONS,
    ACMRConfig,
    TrainConfig,
    WarmUp,
    make_configs,
)
from acmr_core.model.gzsl import GZSLClassifier, fit_gzsl_classifier, gzsl_selection_table
from acmr_core.model.losses import acmr_loss, loss_weights
from acmr_core.model.network import ACMR
from acmr_core.model.predictor import TrainedModel
from acmr_core.runtime import as_tensor, has_native_bf16, resolve_device, seed_everything, training_autocast
from acmr_core.training.metrics import aggregate_seeds, gzsl_scores, zsl_top1

log = logging.getLogger(__name__)


def _device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where ``device`` multiplies bfloat16 natively, else ``"fp32"``; others as
    given."""
    if precision not in PRECISION_CHOICES:
        raise DataError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    return precision


def scale_epochs(train: TrainConfig, epochs: int) -> TrainConfig:
    """The schedule shortened/lengthened to ``epochs``, warm-up epochs scaled in proportion."""
    ratio = epochs / train.epochs

    def scaled(w: WarmUp) -> WarmUp:
        start = round(w.start_epoch * ratio)
        return WarmUp(w.factor, start, max(round(w.end_epoch * ratio), start + 1))

    return replace(
        train,
        epochs=epochs,
        beta=scaled(train.beta),
        distance=scaled(train.distance),
        classify=scaled(train.classify),
    )


def _optimizer(model: ACMR, train: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = [
        {"params": model.vae_parameters(), "lr": train.lr_vae},
        {"params": model.iem_parameters(), "lr": train.lr_iem},
        {"params": model.vsa_parameters(), "lr": train.lr_vsa},
    ]
    groups = [g for g in groups if g["params"]]
    # The fused kernel updates all parameters in one pass (CPU and CUDA); same maths as the for-loop Adam.
    return torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True, fused=True)


def fit_acmr(
    features: Any,
    labels: Any,
    class_attributes: Any,
    arch: ACMRConfig,
    train: TrainConfig,
    device: torch.device | str = "auto",
    seed: int = 0,
    progress: bool = True,
    description: str = "ACMR",
    on_epoch_end: Callable[[int, ACMR], bool] | None = None,
    compile_mode: str | None = None,
) -> ACMR:
    """Train ACMR on model-ready (scaled) ``features`` with 0-based ``labels`` indexing
    ``class_attributes``.

    ``compile_mode`` runs the forward through ``torch.compile`` with that mode (``"default"``,
    ``"reduce-overhead"`` for CUDA graphs, ...); None (the default) runs it eagerly. The benchmarks measure
    whether it pays; the weights and the saved model are the same either way.

    ``on_epoch_end(epoch, model)`` (0-based epoch) runs after every epoch with the model in eval mode and
    returns True to stop training there. It runs under a forked RNG state, so whatever it draws (the
    validation classifier does) leaves the training trajectory exactly as it would be without it.
    """
    device = _device(device)
    seed_everything(seed)
    x_all = as_tensor(features, device, torch.float32)
    y_all = as_tensor(labels, device, torch.int64)
    attributes = as_tensor(class_attributes, device, torch.float32)
    if x_all.shape[0] != y_all.shape[0] or x_all.shape[0] == 0:
        raise DataError(
            f"{x_all.shape[0]} feature rows for {y_all.shape[0]} labels; need the same, non-zero count"
        )
    model = ACMR(arch).to(device)
    optimizer = _optimizer(model, train, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    n = x_all.shape[0]
    autocast = training_autocast(device, train.precision)
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    model.train()
    bar = tqdm(range(train.epochs), desc=description, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        weights = loss_weights(train, epoch)
        order = torch.randperm(n, device=device, generator=generator)
        epoch_loss = torch.zeros((), device=device)
        for start in range(0, n, train.batch_size):
            batch = order[start : start + train.batch_size]
            x, y = x_all[batch], y_all[batch]
            a = attributes[y]
            with autocast:
                output = forward(x, a)
            loss, _ = acmr_loss(output.float(), x, a, y, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach()
        if progress:
            bar.set_postfix(loss=f"{float(epoch_loss) / n:.2f}")  # one host sync per epoch, not per step
        if on_epoch_end is not None:
            model.eval()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                stop = on_epoch_end(epoch, model)
            model.train()
            if stop:
                break
    bar.close()
    model.eval()
    return model


@dataclass
class EpochStopper:
    """The patience rule that chooses the number of ACMR epochs on the validation split.

    Validation H is scored after ``first``, ``first + every``, ... epochs (and after ``max_epochs``, the
    schedule's end). A score counts as a gain only if it beats the best so far by at least ``min_delta`` H
    points; training stops after ``patience`` scores in a row without a gain. The chosen number of epochs is
    that of the last gain (``best_epoch``), so a plateau of small wobbles resolves to its start — the cheaper
    schedule.
    """

    first: int
    every: int
    patience: int
    min_delta: float
    max_epochs: int
    best_epoch: int = 0
    best_h: float = -math.inf
    misses: int = 0

    @classmethod
    def from_config(cls, train: TrainConfig) -> EpochStopper:
        """Scoring starts at the first multiple of ``val_every`` at or after the end of the distance and
        classification warm-ups: before that the loss is not yet the one the model finishes with."""
        first = min(math.ceil(train.warmup_end / train.val_every) * train.val_every, train.epochs)
        return cls(max(first, 1), train.val_every, train.val_patience, train.val_min_delta, train.epochs)

    def scores_after(self, epochs_done: int) -> bool:
        """Whether validation H is scored once ``epochs_done`` epochs are complete."""
        on_grid = epochs_done >= self.first and (epochs_done - self.first) % self.every == 0
        return on_grid or epochs_done == self.max_epochs

    def observe(self, epochs_done: int, h: float) -> bool:
        """Record the validation H after ``epochs_done`` epochs; True when training should stop."""
        if self.best_epoch == 0 or h >= self.best_h + self.min_delta:
            self.best_epoch, self.best_h, self.misses = epochs_done, h, 0
        else:
            self.misses += 1
        return self.misses >= self.patience or epochs_done >= self.max_epochs


def _check_labels(labels: np.ndarray, seen: np.ndarray, n_classes: int) -> None:
    if labels.size == 0:
        raise DataError("no training images were given")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataError(f"labels range {labels.min()}..{labels.max()} but there are {n_classes} classes")
    stray = np.setdiff1d(np.unique(labels), seen)
    if stray.size:
        raise DataError(f"training images of class {int(stray[0])} which is not in the seen classes")


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

        def record(epoch: int, classifier: GZSLClassifier) -> None:
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
        return {
            "classifier_epochs": int(epoch_index) + 1,
            "gamma": float(train.cls_gamma_grid[gamma_index]),
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
    device = _device(device)
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
        cls_epochs, gamma = chosen["classifier_epochs"], chosen["gamma"]
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
        cls_epochs, gamma = train.cls_reference_epochs, 0.0
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
    from acmr_core.model.checkpoint import save_trained  # local: checkpoint imports this module

    device = _device(device)
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
