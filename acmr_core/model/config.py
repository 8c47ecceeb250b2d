"""Architecture and schedule configuration for ACMR, with a per-dataset preset registry.

Public interface (used by training, checkpoints and the bundle builder):

* :class:`ACMRConfig` — the architecture (dims, hidden sizes, ``use_vsa``, ``use_iem``, reparameterisation).
* :class:`WarmUp` — a linear warm-up ``factor`` over epochs ``start_epoch -> end_epoch``.
* :class:`TrainConfig` — the ACMR schedule (epochs, batch size, learning rates, warm-ups) and the GZSL
  classifier settings (samples per class, optimiser, epochs, calibration grid).
* :class:`Preset` — a named ``ACMRConfig`` + ``TrainConfig``, stored as data: one JSON file per built-in
  preset in ``presets/`` (``CUB``, ``SUN``, ``AWA1``, ``AWA2``, a small ``DEMO`` one and ``DEMO-WORLD``, the
  demo bundle's). :func:`load_preset` / :func:`save_preset` read and write one; :func:`find_preset`
  ``(name) -> Preset``, :func:`register_preset`, :func:`list_presets`; :func:`get_preset` ``(name) ->
  (arch dict, TrainConfig)`` for older callers; :func:`make_configs` fits a preset to the data's dims.

All dataclasses round-trip through JSON with ``to_dict()`` / ``from_dict()``; unknown keys are rejected with a
one-line :class:`~acmr_core.errors.DataError` so a corrupt config file is reported, not half-loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from acmr_core.errors import DataError, quote_value, shorten
from acmr_core.fileio import read_json, write_json

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


#: The built-in presets, one JSON file each (package data), named after the preset in lower case.
PRESET_DIR = Path(__file__).with_name("presets")
_PRESET_KEYS = ("name", "description", "arch", "train")


@dataclass(frozen=True)
class Preset:
    """A named ACMR configuration: the architecture and the schedule a dataset trains with.

    ``arch``'s ``feature_dim``, ``attribute_dim`` and ``num_classes`` are the dataset's nominal sizes;
    :func:`make_configs` replaces them with the data's own. Presets are data: :func:`load_preset` reads one
    from a JSON file (the built-in ones live in :data:`PRESET_DIR`), :func:`save_preset` writes one.
    """

    name: str
    description: str
    arch: ACMRConfig
    train: TrainConfig

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a preset name must be a non-empty string, got {quote_value(self.name)}")
        if not isinstance(self.arch, ACMRConfig) or not isinstance(self.train, TrainConfig):
            raise TypeError("a preset holds an ACMRConfig and a TrainConfig")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "arch": self.arch.to_dict(),
            "train": self.train.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any, what: str = "preset") -> Preset:
        """The preset in ``data`` (its JSON form); an unknown key or a value of the wrong type is refused
        with a one-line :class:`~acmr_core.errors.DataError`. Missing config fields take their defaults."""
        if not isinstance(data, dict):
            raise DataError(f"{what} must be a JSON object, got {type(data).__name__}")
        unknown = sorted(str(key) for key in set(data) - set(_PRESET_KEYS))
        if unknown:
            raise DataError(
                f"{what} has unknown keys {quote_value(unknown)}; expected {', '.join(_PRESET_KEYS)}"
            )
        name, description = data.get("name"), data.get("description", "")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{what} needs a 'name' (a non-empty string), got {quote_value(name)}")
        if not isinstance(description, str):
            raise DataError(f"{what} field 'description' must be a string, got {type(description).__name__}")
        what = f"{what} {name!r}"
        arch = _typed_from_dict(ACMRConfig, data.get("arch", {}), f"{what}: arch")
        train = _typed_from_dict(TrainConfig, data.get("train", {}), f"{what}: train")
        return cls(name, description, arch, train)


def _type_name(expected: Any) -> str:
    if typing.get_origin(expected) is tuple:
        return "a list of numbers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        expected, "an object"
    )


def _matches(value: Any, expected: Any) -> bool:
    """Whether a JSON value has the type of a config field (an int is a float, a bool is not a number)."""
    if typing.get_origin(expected) is tuple:  # tuple[float, ...]: the calibration grid
        return isinstance(value, (list, tuple)) and all(_matches(item, float) for item in value)
    if expected is bool:
        return isinstance(value, bool)
    if expected in (int, float):
        numbers = (int,) if expected is int else (int, float)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    return isinstance(value, (dict, expected))  # a nested config (WarmUp), checked field by field below


def _typed_from_dict(cls: type[T], data: Any, what: str) -> T:
    """:func:`_from_dict` after checking each value's JSON type against the field's annotation (a preset
    file is written by hand: "100" for an epoch count must not load)."""
    if isinstance(data, dict):
        hints = typing.get_type_hints(cls)
        for key, value in data.items():
            expected = hints.get(key)
            if expected is None:
                continue  # an unknown key: _from_dict names it
            if not _matches(value, expected):
                raise DataError(
                    f"{what} field {key!r} must be {_type_name(expected)}, got {quote_value(value)}"
                )
            if dataclasses.is_dataclass(expected) and isinstance(value, dict):
                data = {**data, key: _typed_from_dict(expected, value, f"{what}.{key}")}
    return _from_dict(cls, data, what)


def load_preset(path: str | Path) -> Preset:
    """The preset in a JSON file (the form :func:`save_preset` writes); a missing, corrupt or malformed file
    raises a one-line :class:`~acmr_core.errors.DataError`."""
    what = f"preset file {Path(path).name}"
    return Preset.from_dict(read_json(path, what=what, error=DataError), what)


def save_preset(preset: Preset, path: str | Path) -> None:
    write_json(path, preset.to_dict())


@functools.cache
def _builtin_presets() -> dict[str, Preset]:
    # Read once, on first use: importing the config module reads no files.
    presets: dict[str, Preset] = {}
    for path in sorted(PRESET_DIR.glob("*.json")):
        preset = load_preset(path)
        if preset.name.upper() in presets:
            raise DataError(f"preset {preset.name!r} is defined twice in {PRESET_DIR}")
        presets[preset.name.upper()] = preset
    return presets


#: Presets added with :func:`register_preset`; they take precedence over built-in ones of the same name.
_PRESETS: dict[str, Preset] = {}


def _registry() -> dict[str, Preset]:
    return {**_builtin_presets(), **_PRESETS}


def register_preset(preset: Preset) -> Preset:
    """Add ``preset`` to the registry (like timm's model registry), e.g.
    ``register_preset(load_preset("mine.json"))``; names are case-insensitive."""
    if not isinstance(preset, Preset):
        raise TypeError(f"register_preset takes a Preset (see load_preset), got {type(preset).__name__}")
    _PRESETS[preset.name.upper()] = preset
    return preset


def list_presets() -> list[str]:
    return sorted(_registry())


def find_preset(name: str) -> Preset:
    """The registered preset ``name`` (case-insensitive), as a copy: changing it changes no later lookup."""
    preset = _registry().get(str(name).upper())
    if preset is None:
        raise DataError(f"unknown preset '{name}'; choose one of {', '.join(list_presets())}")
    return copy.deepcopy(preset)


def get_preset(name: str) -> tuple[dict[str, Any], TrainConfig]:
    """``(ACMRConfig fields as a dict, TrainConfig)`` of :func:`find_preset` ``(name)``, the form callers
    written before presets were typed unpack."""
    preset = find_preset(name)
    return preset.arch.to_dict(), preset.train


def make_configs(
    preset: str, *, feature_dim: int, attribute_dim: int, num_classes: int, **overrides: Any
) -> tuple[ACMRConfig, TrainConfig]:
    """Preset architecture with the data's actual dims; ``overrides`` go to ACMRConfig (e.g. use_vsa)."""
    chosen = find_preset(preset)
    dims = {"feature_dim": feature_dim, "attribute_dim": attribute_dim, "num_classes": num_classes}
    return dataclasses.replace(chosen.arch, **{**dims, **overrides}), chosen.train
