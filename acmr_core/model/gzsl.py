"""The final GZSL classifier: a linear softmax over ACMR latents, trained on-device, plus calibration.

Public interface:

* :class:`GZSLClassifier` ``(latent_dim, num_classes)`` — ``forward(z) -> logits``.
* :func:`sample_latent_dataset` — the ONE sampler of the classifier's training set: latents sampled from
  seen images' posteriors (``seen_samples`` per class) and from unseen classes' attribute encodings
  (``unseen_samples`` per class), as in the reference — except that a class's images are taken in a seeded
  random order, where the reference takes the first ``seen_samples`` of each class in file order (cycling
  when a class has fewer). The posteriors are encoded from features (:func:`sample_classifier_data`, used
  by training) or looked up in a stored table (a bundle's re-fit for user classes).
* :func:`train_classifier` — mini-batch Adam on a latent dataset that stays on the device (batch indexing
  on-device, no per-step host sync); an optional ``on_epoch_end(epoch, classifier)`` hook.
* :func:`fit_gzsl_classifier` ``(model, seen_features, seen_labels, class_attributes, unseen_classes, ...,
  device, seed) -> GZSLClassifier`` — works for ANY class set (the app re-fits it when a user adds a class);
  sample counts and schedule are parameters.
* :func:`fit_extra_row` / :func:`with_rows` — the fast update (issue 24): one more class's softmax row trained
  against a fixed classifier (the bundle's), which is a binary logistic regression with the fixed rows'
  log-sum-exp as offset; rows are appended without touching the others.
* :func:`predict_scores` ``(logits, seen_mask, gamma)`` — calibrated stacking: log-softmax minus ``gamma`` on
  seen classes (``gamma = 0`` is the plain classifier); :func:`check_gamma` refuses a non-finite or huge
  ``gamma`` in one line.
* :func:`gzsl_selection_table` — per-epoch x per-gamma validation U/S/H computed on the device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from acmr_core.errors import ACMRError, quote_value
from acmr_core.model.network import ACMR, reference_init
from acmr_core.runtime import as_tensor

log = logging.getLogger(__name__)


class GZSLClassifier(nn.Module):
    """Linear softmax classifier over the latent space (outputs logits)."""

    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, num_classes)
        self.apply(reference_init)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward(self, z: Tensor) -> Tensor:
        return self.fc(z)


#: Largest calibration |gamma| accepted. Log-probability gaps past a few hundred already round to
#: probabilities of exactly 0 or 1 in float32, so larger values change nothing — while one beyond float32's
#: range becomes inf, and ``inf * 0`` on the unseen classes makes every probability NaN.
MAX_ABS_GAMMA = 1000.0


def check_gamma(gamma: object) -> float:
    """``gamma`` as a float, or an :class:`ACMRError` (one line) if it is no number, not finite or beyond
    ±:data:`MAX_ABS_GAMMA`."""
    try:
        value = float(gamma)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # text, a list, an int too large for a float
        raise ACMRError(f"calibration gamma must be a finite number, got {quote_value(gamma)}") from None
    if not math.isfinite(value) or abs(value) > MAX_ABS_GAMMA:
        raise ACMRError(
            f"calibration gamma must be a finite number between -{MAX_ABS_GAMMA:g} and {MAX_ABS_GAMMA:g}, "
            f"got {value:g}"
        )
    return value


def predict_scores(logits: Tensor, seen_mask: Tensor, gamma: float | Tensor) -> Tensor:
    """Calibrated stacking (Chao et al. 2016): ``log_softmax(logits) - gamma * seen_mask``.

    A number ``gamma`` (user input) is checked by :func:`check_gamma`; a tensor (the training's grid, built
    by the project) is used as is, since checking it would cost a device sync.
    """
    if not isinstance(gamma, Tensor):
        gamma = check_gamma(gamma)
    return F.log_softmax(logits, dim=-1) - gamma * seen_mask.to(logits.dtype)


#: Rows encoded per forward pass when latents are sampled from features.
ENCODE_CHUNK = 4096

#: The posterior of some rows: ``row indices -> (mu, logvar)`` (encoded from inputs, or looked up).
Posterior = Callable[[Tensor], tuple[Tensor, Tensor]]


def per_class_rows(
    labels: np.ndarray, classes: np.ndarray, per_class: int, rng: np.random.Generator
) -> np.ndarray:
    """``per_class`` row indices per class: a random order of the class's rows, cycled when it has too few."""
    chosen = []
    for cls in classes:
        rows = np.flatnonzero(labels == cls)
        if rows.size == 0:
            continue
        order = rng.permutation(rows)
        chosen.append(np.resize(order, per_class))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def encoded_posterior(encode: Callable[[Tensor], tuple[Tensor, Tensor]], inputs: Tensor) -> Posterior:
    """The posterior of rows of ``inputs`` (features or attribute vectors), ``ENCODE_CHUNK`` rows a pass."""

    def posterior(rows: Tensor) -> tuple[Tensor, Tensor]:
        encoded = [encode(inputs[rows[s : s + ENCODE_CHUNK]]) for s in range(0, rows.numel(), ENCODE_CHUNK)]
        return torch.cat([m for m, _ in encoded]), torch.cat([v for _, v in encoded])

    return posterior


def stored_posterior(mu: Tensor, logvar: Tensor) -> Posterior:
    """The posterior of rows of a stored ``(mu, logvar)`` table (a bundle keeps its training images')."""
    return lambda rows: (mu[rows], logvar[rows])


def noisy_latents(
    model: ACMR, posterior: Posterior, rows: Tensor, generator: torch.Generator, noise_chunk: int
) -> Tensor:
    """One noisy latent per entry of ``rows`` (row indices, with repeats). The posterior of each distinct row
    is computed once — the per-class samples repeat images (and every unseen class's attribute vector) many
    times — and the noise is drawn per ``noise_chunk`` entries (the draws depend on that chunking)."""
    if rows.numel() == 0:
        return torch.zeros(0, model.cfg.latent_dim, device=rows.device)
    distinct, inverse = torch.unique(rows, return_inverse=True)
    mu, logvar = posterior(distinct)
    return torch.cat([
        model.reparameterize(mu[chunk], logvar[chunk], generator=generator)
        for chunk in inverse.split(max(int(noise_chunk), 1))
    ])  # fmt: skip


@torch.no_grad()
def sample_latent_dataset(
    model: ACMR,
    seen: Posterior,
    seen_labels: np.ndarray,
    unseen: Posterior,
    unseen_classes: Sequence[int] | np.ndarray,
    *,
    seen_samples: int,
    unseen_samples: int,
    seed: int,
    device: torch.device,
    seen_classes: np.ndarray | None = None,
    seen_noise_chunk: int = ENCODE_CHUNK,
    unseen_noise_chunk: int = ENCODE_CHUNK,
) -> tuple[Tensor, Tensor]:
    """The GZSL classifier's training set: noisy latents with their class labels.

    ``seen_samples`` latents per seen class, drawn from the posteriors of its images (``seen``: rows
    labelled ``seen_labels``) taken in a seeded random order, and ``unseen_samples`` per unseen class from
    the posterior of its attributes (``unseen``: rows are class ids). ``seen_classes`` defaults to the
    labels present.
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    labels = np.asarray(seen_labels, dtype=np.int64)
    classes = np.unique(labels) if seen_classes is None else np.asarray(seen_classes)
    seen_rows = torch.as_tensor(per_class_rows(labels, classes, seen_samples, rng), device=device)
    unseen_labels = torch.as_tensor(np.asarray(unseen_classes, dtype=np.int64), device=device)
    unseen_labels = unseen_labels.repeat_interleave(unseen_samples)
    was_training = model.training
    model.eval()
    z = torch.cat([
        noisy_latents(model, seen, seen_rows, generator, seen_noise_chunk),
        noisy_latents(model, unseen, unseen_labels, generator, unseen_noise_chunk),
    ])  # fmt: skip
    model.train(was_training)
    y = torch.cat((torch.as_tensor(labels, device=device)[seen_rows], unseen_labels))
    return z, y


def sample_classifier_data(
    model: ACMR,
    seen_features: Tensor,
    seen_labels: Tensor,
    class_attributes: Tensor,
    unseen_classes: Sequence[int] | np.ndarray | Tensor,
    *,
    seen_samples: int,
    unseen_samples: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Noisy latents for the classifier: images of seen classes and attribute vectors of unseen classes."""
    return sample_latent_dataset(
        model,
        encoded_posterior(model.encode_visual, seen_features),
        seen_labels.detach().cpu().numpy(),
        encoded_posterior(model.encode_semantic, class_attributes),
        np.asarray(torch.as_tensor(unseen_classes).cpu()),
        seen_samples=seen_samples,
        unseen_samples=unseen_samples,
        seed=seed,
        device=seen_features.device,
    )


def train_classifier(
    z: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    beta1: float,
    batch_size: int,
    seed: int,
    drop_last: bool = False,
    on_epoch_end: Callable[[int, GZSLClassifier], None] | None = None,
) -> GZSLClassifier:
    """Adam on (z, y) held on z's device; shuffling and batching happen on the device. ``drop_last`` skips
    each epoch's last incomplete batch (what the reference's DataLoader does)."""
    device = z.device
    torch.manual_seed(seed)
    classifier = GZSLClassifier(z.shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, betas=(beta1, 0.999))
    generator = torch.Generator(device=device).manual_seed(seed)
    n = z.shape[0]
    end = n - n % batch_size if drop_last else n
    for epoch in range(epochs):
        classifier.train()
        order = torch.randperm(n, device=device, generator=generator)
        for start in range(0, end, batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(classifier(z[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_epoch_end is not None:
            classifier.eval()
            on_epoch_end(epoch, classifier)
    classifier.eval()
    return classifier


def fit_gzsl_classifier(
    model: ACMR,
    seen_features: Any,
    seen_labels: Any,
    class_attributes: Any,
    unseen_classes: Sequence[int] | np.ndarray,
    *,
    num_classes: int | None = None,
    seen_samples: int = 200,
    unseen_samples: int = 200,
    epochs: int = 20,
    lr: float = 3e-3,
    beta1: float = 0.5,
    batch_size: int = 256,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
    seed: int = 0,
    on_epoch_end: Callable[[int, GZSLClassifier], None] | None = None,
) -> GZSLClassifier:
    """Train a GZSL classifier over ``num_classes`` (default: all rows of ``class_attributes``).

    ``seen_features`` are model-ready (already scaled) features of training images, ``seen_labels`` their
    0-based class ids (rows of ``class_attributes``); ``unseen_classes`` get latents sampled from their
    attributes.
    """
    device = torch.device(device)
    features = as_tensor(seen_features, device, torch.float32)
    labels = as_tensor(seen_labels, device, torch.int64)
    attributes = as_tensor(class_attributes, device, torch.float32)
    n_classes = int(num_classes or attributes.shape[0])
    model = model.to(device)
    z, y = sample_classifier_data(
        model,
        features,
        labels,
        attributes,
        unseen_classes,
        seen_samples=seen_samples,
        unseen_samples=unseen_samples,
        seed=seed,
    )
    return train_classifier(
        z,
        y,
        n_classes,
        epochs=epochs,
        lr=lr,
        beta1=beta1,
        batch_size=batch_size,
        seed=seed,
        drop_last=drop_last,
        on_epoch_end=on_epoch_end,
    )


#: The fast update's schedule for one extra row: full-batch Adam from zero. 200 steps at 0.1 give rows of the
#: norm of the trained ones (about 4-6 on the demo bundle) that take the top-1 on their own latents (at 0.05 a
#: class one attribute away from a seen class lost half of them); longer or faster fits grow the norm and the
#: new row takes other classes' images (render-your-class top-1 fell from 96.7 to 83-92 %). The early stop is
#: the regularisation: the optimum of a separable problem is unbounded. Measured against a full re-fit:
#: docs/benchmarks/app.md, "Fast add and delete (issue 24)".
EXTRA_ROW_STEPS = 200
EXTRA_ROW_LR = 0.1


@torch.no_grad()
def logit_offset(classifier: GZSLClassifier, z: Tensor) -> Tensor:
    """``logsumexp`` of a fixed classifier's logits on ``z``: all a new row needs to know of the others."""
    classifier.eval()
    return torch.logsumexp(classifier(z), dim=-1)


def fit_extra_row(
    z: Tensor,
    offset: Tensor,
    target: Tensor,
    *,
    steps: int = EXTRA_ROW_STEPS,
    lr: float = EXTRA_ROW_LR,
    beta1: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """``(weight (d,), bias ())`` of one more softmax row over a fixed classifier, trained on latents ``z``.

    With the other rows fixed, the softmax cross-entropy of the extended classifier depends on the new row's
    logit ``s`` only through ``s - logsumexp(others)``: it is a binary logistic regression of ``target``
    (1 on the new class's latents, 0 on the others' training latents) with ``-offset`` added to the logit
    (:func:`logit_offset`). Full-batch and started from zero, so the row is a pure function of its inputs.
    """
    inputs = torch.cat((z, torch.ones(z.shape[0], 1, device=z.device, dtype=z.dtype)), dim=1)
    params = torch.zeros(inputs.shape[1], device=z.device, dtype=z.dtype)
    optimizer = torch.optim.Adam([params], lr=lr, betas=(beta1, 0.999))
    target = target.to(z.dtype)
    for _ in range(int(steps)):
        # The logistic loss's gradient in closed form (mean of (sigmoid - target) * input): half the time of
        # autograd for this one matrix-vector product, which is what an add waits for.
        params.grad = (torch.sigmoid(inputs @ params - offset) - target) @ inputs / inputs.shape[0]
        optimizer.step()
    return params[:-1].clone(), params[-1].clone()


@torch.no_grad()
def with_rows(classifier: GZSLClassifier, weight: Tensor, bias: Tensor) -> GZSLClassifier:
    """A new classifier: ``classifier``'s rows (unchanged, copied), then ``weight (K, d)``, ``bias (K,)``."""
    fc = classifier.fc
    extended = GZSLClassifier(fc.in_features, fc.out_features + int(weight.shape[0])).to(fc.weight.device)
    extended.fc.weight.copy_(torch.cat((fc.weight, weight.to(fc.weight))))
    extended.fc.bias.copy_(torch.cat((fc.bias, bias.to(fc.bias))))
    return extended.eval()


@torch.no_grad()
def first_rows(classifier: GZSLClassifier, count: int) -> GZSLClassifier:
    """A new classifier over the first ``count`` classes of ``classifier`` (rows copied)."""
    fc = classifier.fc
    kept = GZSLClassifier(fc.in_features, int(count)).to(fc.weight.device)
    kept.fc.weight.copy_(fc.weight[:count])
    kept.fc.bias.copy_(fc.bias[:count])
    return kept.eval()


def _mean_class_accuracy(predictions: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """Per-class mean top-1 (fraction) for each row of ``predictions`` (G, N), on the device."""
    lookup = torch.full(
        (int(max(labels.max(), classes.max())) + 1,), -1, dtype=torch.long, device=labels.device
    )
    lookup[classes] = torch.arange(classes.numel(), device=labels.device)
    slot = lookup[labels]
    counts = torch.bincount(slot, minlength=classes.numel()).clamp_min(1).to(torch.float32)
    correct = (predictions == labels).to(torch.float32)
    hits = torch.zeros(predictions.shape[0], classes.numel(), device=labels.device)
    hits.index_add_(1, slot, correct)
    return (hits / counts).mean(dim=1)


@torch.no_grad()
def gzsl_selection_table(
    logits_seen: Tensor,
    labels_seen: Tensor,
    logits_unseen: Tensor,
    labels_unseen: Tensor,
    seen_mask: Tensor,
    gammas: Tensor,
) -> Tensor:
    """``(G, 3)`` tensor of U, S, H (fractions) for each calibration gamma — computed without leaving the
    device."""
    seen_classes = torch.unique(labels_seen)
    unseen_classes = torch.unique(labels_unseen)
    shift = gammas.view(-1, 1, 1) * seen_mask.view(1, 1, -1)
    pred_seen = (F.log_softmax(logits_seen, -1).unsqueeze(0) - shift).argmax(-1)
    pred_unseen = (F.log_softmax(logits_unseen, -1).unsqueeze(0) - shift).argmax(-1)
    s = _mean_class_accuracy(pred_seen, labels_seen, seen_classes)
    u = _mean_class_accuracy(pred_unseen, labels_unseen, unseen_classes)
    h = torch.where(u + s > 0, 2 * u * s / (u + s).clamp_min(1e-12), torch.zeros_like(u))
    return torch.stack((u, s, h), dim=1)
