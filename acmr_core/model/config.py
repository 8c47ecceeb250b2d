"""Architecture and schedule configuration for ACMR, with a per-dataset preset registry.

Public interface (used by training, checkpoints and the bundle builder):

* :class:`ACMRConfig` — the architecture (dims, hidden sizes, ``use_vsa``, ``use_iem``, reparameterisation).
* :class:`WarmUp` — a linear warm-up ``factor`` over epochs ``start_epoch -> end_epoch``.
* :class:`TrainConfig` — the ACMR schedule (epochs, batch size, learning rates, warm-ups) and the GZSL
  classifier settings (samples per class, optimiser, epochs, calibration grid).
* :func:`get_preset` ``(name) -> (arch kwargs, TrainConfig)`` for ``CUB``, ``SUN``, ``AWA1``, ``AWA2`` and a
  small ``demo`` preset (~20 classes x ~20 attributes); :func:`register_preset`, :func:`list_presets`.

All dataclasses round-trip through JSON with ``to_dict()`` / ``from_dict()``; unknown keys are rejected with a
one-line :class:`~acmr_core.errors.DataError` so a corrupt config file is reported, not half-loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from acmr_core.errors import DataError, quote_value, shorten

REPARAMETERIZATIONS = ("reference", "standard")
SELECTIONS = ("validation", "reference")
PRECISIONS = ("fp32", "bf16")
# "auto": bf16 where the device multiplies bfloat16 natively, else fp32 (training.resolve_precision).
PRECISION_CHOICES = ("auto", *PRECISIONS)

T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    if not isinstance(data, dict):
        raise DataError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(key) for key in set(data) - names)
    if unknown:
        raise DataError(f"{what} has unknown keys {quote_value(unknown)}; was it written by another version?")
    try:
        return cls(**data)
    except (TypeError, ValueError, OverflowError) as error:
        raise DataError(f"{what} is invalid: {shorten(str(error))}") from None


@dataclass
class ACMRConfig:
    """ACMR architecture. Defaults are the reference CUB sizes (2048-d ResNet-101 features, 312
    attributes)."""

    feature_dim: int = 2048
    attribute_dim: int = 312
    num_classes: int = 200
    latent_dim: int = 64
    visual_encoder_hidden: int = 1560
    visual_decoder_hidden: int = 1665
    semantic_encoder_hidden: int = 1450
    semantic_decoder_hidden: int = 665
    iem_hidden: int = 99
    use_vsa: bool = True
    use_iem: bool = True
    # "reference": z = mu + exp(logvar) * eps with ONE eps per sample broadcast over all latent dims (the
    # reference/CADA-VAE quirk, kept as the faithful default). "standard": z = mu + exp(logvar / 2) * eps.
    reparameterization: str = "reference"

    def __post_init__(self) -> None:
        if self.reparameterization not in REPARAMETERIZATIONS:
            raise ValueError(
                f"reparameterization must be one of {REPARAMETERIZATIONS}, got {self.reparameterization!r}"
            )
        for name in ("feature_dim", "attribute_dim", "num_classes", "latent_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ACMRConfig:
        return _from_dict(cls, data, "ACMR config")


@dataclass
class WarmUp:
    """Loss weight rising linearly from 0 at ``start_epoch`` to ``factor`` at ``end_epoch`` (reference
    rule)."""

    factor: float
    start_epoch: int
    end_epoch: int

    def value(self, epoch: int) -> float:
        span = max(self.end_epoch - self.start_epoch, 1)
        ramp = (epoch - self.start_epoch) / span * self.factor
        return float(min(max(ramp, 0.0), self.factor))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _warmup(data: Any, what: str) -> WarmUp:
    return data if isinstance(data, WarmUp) else _from_dict(WarmUp, data, what)


@dataclass
class TrainConfig:
    """ACMR training schedule plus GZSL classifier settings (reference values for CUB by default)."""

    epochs: int = 100
    batch_size: int = 50
    lr_vae: float = 1.5e-4
    lr_iem: float = 3.3e-5
    lr_vsa: float = 7.4e-3
    beta: WarmUp = field(default_factory=lambda: WarmUp(2.555, 0, 93))
    distance: WarmUp = field(default_factory=lambda: WarmUp(8.21, 7, 22))
    classify: WarmUp = field(default_factory=lambda: WarmUp(310.5, 0, 21))
    # GZSL classifier: latents sampled per seen class (from images) and per unseen class (from attributes).
    cls_seen_samples: int = 200
    cls_unseen_samples: int = 390
    # Reference classifier schedule (Adam lr 5e-4, beta1 0.3, batch 32, 50 epochs, the last incomplete batch
    # dropped) — `selection="reference"`. 50, not 49: the reference's CLASSIFIER constructor fits one epoch
    # before its loop over k = 1 ... steps - 1.
    cls_reference_lr: float = 5e-4
    cls_reference_beta1: float = 0.3
    cls_reference_batch_size: int = 32
    cls_reference_epochs: int = 50
    # Fast on-device classifier used by the validation protocol: bigger batches, fewer steps.
    cls_lr: float = 3e-3
    cls_beta1: float = 0.5
    cls_batch_size: int = 256
    cls_max_epochs: int = 20
    # Seen-class calibration candidates (calibrated stacking: seen log-probabilities minus gamma).
    cls_gamma_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    # Fraction of seen-class training images held out as "test seen" of the validation split.
    val_seen_holdout: float = 0.2
    # ACMR epochs chosen on the validation split (docs/training.md, "How many ACMR epochs"): validation H is
    # scored every `val_every` epochs once the distance and classification warm-ups are complete; training
    # stops after `val_patience` scores in a row without a gain of at least `val_min_delta` H points over the
    # best so far, and the best-scoring epoch (at most `epochs`) is the one the final stage trains for.
    val_every: int = 5
    val_patience: int = 2
    val_min_delta: float = 0.5
    # ACMR training arithmetic: "fp32" (the reference's, default) or "bf16" (autocast matrix products, fp32
    # weights and optimizer state; faster on GPUs and on CPUs with native bfloat16, see docs/training.md).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.beta = _warmup(self.beta, "beta warm-up")
        self.distance = _warmup(self.distance, "distance warm-up")
        self.classify = _warmup(self.classify, "classify warm-up")
        self.cls_gamma_grid = tuple(float(g) for g in self.cls_gamma_grid)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs}, {self.batch_size}")
        if not 0.0 < self.val_seen_holdout < 1.0:
            raise ValueError(f"val_seen_holdout must be in (0, 1), got {self.val_seen_holdout}")
        if self.val_every < 1 or self.val_patience < 1 or self.val_min_delta < 0:
            raise ValueError(
                f"val_every and val_patience must be positive and val_min_delta non-negative, got "
                f"{self.val_every}, {self.val_patience}, {self.val_min_delta}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")

    def classifier_optimizer(self, reference: bool = False) -> dict[str, Any]:
        """``lr``, ``beta1``, ``batch_size`` and ``drop_last`` of the GZSL classifier: the fast schedule
        (whose epochs the validation protocol selects), or the reference's fixed one with
        ``reference=True`` (which, like the reference's DataLoader, drops each epoch's last incomplete
        batch)."""
        if reference:
            return {
                "lr": self.cls_reference_lr,
                "beta1": self.cls_reference_beta1,
                "batch_size": self.cls_reference_batch_size,
                "drop_last": True,
            }
        return {
            "lr": self.cls_lr,
            "beta1": self.cls_beta1,
            "batch_size": self.cls_batch_size,
            "drop_last": False,
        }

    @property
    def warmup_end(self) -> int:
        """The epoch from which the distance and classification losses carry their full weight (the beta
        warm-up runs nearly the whole schedule and is not waited for)."""
        return max(self.distance.end_epoch, self.classify.end_epoch)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cls_gamma_grid"] = list(self.cls_gamma_grid)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data, "training config")


PresetFactory = Callable[[], tuple[dict[str, Any], TrainConfig]]
_PRESETS: dict[str, PresetFactory] = {}


def register_preset(name: str) -> Callable[[PresetFactory], PresetFactory]:
    """Decorator adding a preset factory to the registry (like timm's model registry)."""

    def decorator(factory: PresetFactory) -> PresetFactory:
        _PRESETS[name.upper()] = factory
        return factory

    return decorator


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> tuple[dict[str, Any], TrainConfig]:
    """Return ``(arch kwargs for ACMRConfig, TrainConfig)`` for a dataset preset (case-insensitive)."""
    factory = _PRESETS.get(name.upper())
    if factory is None:
        raise DataError(f"unknown preset '{name}'; choose one of {', '.join(list_presets())}")
    arch, train = factory()
    return dict(arch), train


@register_preset("CUB")
def _cub() -> tuple[dict[str, Any], TrainConfig]:
    arch = {"attribute_dim": 312, "num_classes": 200, "visual_decoder_hidden": 1665}
    return arch, TrainConfig(
        beta=WarmUp(2.555, 0, 93),
        distance=WarmUp(8.21, 7, 22),
        classify=WarmUp(310.5, 0, 21),
        cls_unseen_samples=390,
    )


@register_preset("SUN")
def _sun() -> tuple[dict[str, Any], TrainConfig]:
    arch = {"attribute_dim": 102, "num_classes": 717, "visual_decoder_hidden": 1660}
    return arch, TrainConfig(
        beta=WarmUp(2.455, 0, 93),
        distance=WarmUp(10.1, 7, 22),
        classify=WarmUp(305.555, 0, 22),
        cls_unseen_samples=410,
    )


@register_preset("AWA1")
def _awa1() -> tuple[dict[str, Any], TrainConfig]:
    arch = {"attribute_dim": 85, "num_classes": 50, "visual_decoder_hidden": 1680}
    return arch, TrainConfig(
        beta=WarmUp(7.0 / 3.0, 0, 93),
        distance=WarmUp(8.11, 6, 23),
        classify=WarmUp(290.13, 0, 16),
        cls_unseen_samples=460,
    )


@register_preset("AWA2")
def _awa2() -> tuple[dict[str, Any], TrainConfig]:
    arch = {"attribute_dim": 85, "num_classes": 50, "visual_decoder_hidden": 1680}
    return arch, TrainConfig(
        beta=WarmUp(3.554, 0, 93),
        distance=WarmUp(12.0, 6, 22),
        classify=WarmUp(100.5, 0, 19),
        cls_unseen_samples=480,
        cls_reference_epochs=300,
    )


@register_preset("DEMO")
def _demo() -> tuple[dict[str, Any], TrainConfig]:
    # ~50 classes x ~20 attributes on 2048-d features: narrower MLPs and a shorter schedule (the demo bundle
    # is rebuilt on a CPU); the loss structure and the warm-up shape are the reference ones. A lighter KL
    # weight (0.25) keeps the posteriors narrower than the spread of the class means, and the classifier may
    # train up to 100 epochs (validation picks): both raised validation H (docs/benchmarks/demo.md).
    arch = {
        "attribute_dim": 20,
        "num_classes": 20,
        "visual_encoder_hidden": 512,
        "visual_decoder_hidden": 512,
        "semantic_encoder_hidden": 128,
        "semantic_decoder_hidden": 128,
    }
    return arch, TrainConfig(
        epochs=60,
        beta=WarmUp(0.25, 0, 55),
        distance=WarmUp(8.21, 4, 14),
        classify=WarmUp(100.0, 0, 12),
        cls_seen_samples=200,
        cls_unseen_samples=200,
        cls_max_epochs=100,
    )


def make_configs(
    preset: str, *, feature_dim: int, attribute_dim: int, num_classes: int, **overrides: Any
) -> tuple[ACMRConfig, TrainConfig]:
    """Preset architecture with the data's actual dims; ``overrides`` go to ACMRConfig (e.g. use_vsa)."""
    arch_kwargs, train = get_preset(preset)
    arch_kwargs.update(feature_dim=feature_dim, attribute_dim=attribute_dim, num_classes=num_classes)
    arch_kwargs.update(overrides)
    return ACMRConfig(**arch_kwargs), train
