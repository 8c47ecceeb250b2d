"""The ACMR training loop and what shapes its schedule.

* :func:`fit_acmr` ``(features, labels, class_attributes, arch, train, device, seed, progress=True)
  -> ACMR`` — the ACMR training loop. Data stays on the device; batches are indexed on the device; the loss
  is never read back inside an epoch (one host sync per epoch, for the progress bar).
* :func:`resolve_precision` (``"auto"`` -> bf16 or fp32 for a device), :func:`scale_epochs` (a schedule
  shortened or lengthened, warm-ups in proportion), :func:`torch_device`.
* :class:`EpochStopper` — the patience rule that stops the validation ACMR and chooses its number of epochs
  (used by :mod:`acmr_core.training.selection`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from acmr_core.errors import DataError
from acmr_core.model.config import PRECISION_CHOICES, ACMRConfig, TrainConfig, WarmUp
from acmr_core.model.losses import acmr_loss, loss_weights
from acmr_core.model.network import ACMR
from acmr_core.runtime import as_tensor, has_native_bf16, resolve_device, seed_everything, training_autocast


def torch_device(device: torch.device | str) -> torch.device:
    """``device`` as given when it is a torch device, else resolved from its name (``auto|cpu|cuda[:N]``)."""
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
    device = torch_device(device)
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
