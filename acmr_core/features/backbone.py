"""The image backbone: a timm ResNet-101 wrapped as a feature extractor (images -> 2048-d pooled features).

Features from different weights (or different preprocessing) are not interchangeable, so every backbone
carries a :class:`BackboneIdentity` (architecture, weight source, SHA-256 of the weights, transform config)
that is written next to every feature file and every trained model, and checked with
:meth:`BackboneIdentity.ensure_matches` when they are used together.

:func:`create_backbone` builds (or reuses, from a small cache) a :class:`Backbone`: the timm model in eval
mode on its device, timm's eval transform from the model's data config, and the identity. Where the weights
come from (seeded random, a local file, the hub) is :mod:`acmr_core.features.weights`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from acmr_core.data.images import to_rgb
from acmr_core.errors import BackboneError
from acmr_core.features.weights import (
    DEFAULT_MODEL,
    RANDOM_WEIGHTS,
    WeightsSpec,
    load_model,
    resolve_weights,
    state_dict_sha256,
)
from acmr_core.fileio import jsonable
from acmr_core.runtime import resolve_device

log = logging.getLogger(__name__)

#: Images per forward pass by default.
DEFAULT_BATCH_SIZE = 32

IDENTITY_FORMAT = 1
_CACHE_SIZE = 2  # a ResNet-101 is ~170 MB; the app needs one, a rebuild may briefly need two


# --------------------------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class BackboneIdentity:
    """What makes features comparable: same architecture, same weights (by hash), same preprocessing."""

    model_name: str
    weight_source: str
    weights_sha256: str
    transform: dict[str, Any] = field(default_factory=dict)
    feature_dim: int = 2048

    # Fields that decide whether two backbones give the same features; ``weight_source`` is descriptive only
    # (a hub download and a local copy of the same file are the same backbone).
    COMPARED_FIELDS = ("model_name", "weights_sha256", "transform", "feature_dim")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": IDENTITY_FORMAT,
            "model_name": self.model_name,
            "weight_source": self.weight_source,
            "weights_sha256": self.weights_sha256,
            "transform": dict(self.transform),
            "feature_dim": self.feature_dim,
        }

    @classmethod
    def from_dict(cls, data: Any) -> BackboneIdentity:
        if not isinstance(data, dict):
            raise BackboneError(f"backbone identity must be a JSON object, got {type(data).__name__}")
        missing = [
            key for key in ("model_name", "weight_source", "weights_sha256", "transform") if key not in data
        ]
        if missing:
            raise BackboneError(f"backbone identity is missing {', '.join(missing)}; the file is incomplete")
        if not isinstance(data["transform"], dict):
            raise BackboneError("backbone identity 'transform' must be a JSON object; the file is corrupt")
        try:
            return cls(
                model_name=str(data["model_name"]),
                weight_source=str(data["weight_source"]),
                weights_sha256=str(data["weights_sha256"]),
                transform=jsonable(data["transform"]),
                feature_dim=int(data.get("feature_dim", 2048)),
            )
        except (TypeError, ValueError) as error:
            raise BackboneError(f"backbone identity is malformed ({error}); the file is corrupt") from None

    def describe(self) -> str:
        return f"{self.model_name} [{self.weight_source}, sha256 {self.weights_sha256[:12]}]"

    def differences(self, other: BackboneIdentity) -> list[str]:
        """Names of the compared fields that differ."""
        return [name for name in self.COMPARED_FIELDS if getattr(self, name) != getattr(other, name)]

    def ensure_matches(self, other: BackboneIdentity, context: str = "") -> None:
        """Raise :class:`BackboneError` unless ``other`` gives the same features as ``self`` (expected)."""
        differing = self.differences(other)
        if not differing:
            return
        details = "; ".join(
            _describe_difference(name, getattr(self, name), getattr(other, name)) for name in differing
        )
        where = f"{context}: " if context else ""
        raise BackboneError(
            f"{where}backbone mismatch, {details} (expected {self.describe()}, got {other.describe()}); "
            "features, models and the backbone must come from the same --weights"
        )


def _describe_difference(name: str, expected: Any, got: Any) -> str:
    if name == "transform":
        keys = sorted({*expected, *got})
        changed = [key for key in keys if expected.get(key) != got.get(key)]
        return "transform differs in " + ", ".join(
            f"{key} ({expected.get(key)!r} vs {got.get(key)!r})" for key in changed
        )
    if name == "weights_sha256":
        return f"weights_sha256 differs ({expected[:12]}… vs {got[:12]}…)"
    return f"{name} differs ({expected!r} vs {got!r})"


# --------------------------------------------------------------------------------------------- backbone


class Backbone:
    """A ready-to-use feature extractor: model in eval mode on its device, timm transform, identity."""

    def __init__(
        self,
        model: torch.nn.Module,
        identity: BackboneIdentity,
        transform: Callable[[Image.Image], torch.Tensor],
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise BackboneError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.identity = identity
        self.transform = transform
        self.device = device
        self.batch_size = batch_size

    @property
    def feature_dim(self) -> int:
        return self.identity.feature_dim

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image → a normalised (3, H, W) tensor, exactly as timm's eval transform does it."""
        return self.transform(to_rgb(image))

    def features(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        """Pooled features of PIL images, shape ``(n, feature_dim)``, float32."""
        size = batch_size or self.batch_size
        chunks = [
            self.features_from_tensor(
                torch.stack([self.preprocess(image) for image in images[start : start + size]])
            )
            for start in range(0, len(images), size)
        ]
        if not chunks:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def features_from_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Pooled features of an already preprocessed batch ``(n, 3, H, W)``, float32 on the CPU."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise BackboneError(f"expected a batch of shape (n, 3, H, W), got {tuple(batch.shape)}")
        with torch.inference_mode(), self._autocast():
            inputs = batch.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            output = self.model(inputs)
        return output.float().cpu().numpy()

    def _autocast(self) -> Any:
        # Mixed precision only on CUDA: on CPU float32 is both faster here and exactly reproducible.
        if self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def __repr__(self) -> str:
        return f"Backbone({self.identity.describe()}, device={self.device}, batch_size={self.batch_size})"


# --------------------------------------------------------------------------------------------- factory

_cache: OrderedDict[tuple[Any, ...], tuple[torch.nn.Module, BackboneIdentity, Callable]] = OrderedDict()
_cache_lock = threading.Lock()


def create_backbone(
    weights: str = RANDOM_WEIGHTS,
    model_name: str = DEFAULT_MODEL,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    use_cache: bool = True,
    residual_scale: float = 0.0,
) -> Backbone:
    """Build (or reuse) a backbone.

    ``weights``: ``"random"`` (seeded by ``seed``), a timm pretrained tag (``"tv_in1k"``,
    ``"resnet101.a1h_in1k"``), or a path to a ``.safetensors`` / ``.pth`` file. ``model_name`` is a timm
    architecture, optionally with a tag whose preprocessing to use for random or file weights.
    ``residual_scale`` (random weights only): the weight of the last BatchNorm of every residual branch
    (see :func:`acmr_core.features.weights.seeded_random_state_dict`); 0 keeps timm's zero-init.
    """
    torch_device = resolve_device(device)
    spec = resolve_weights(weights, model_name, seed, residual_scale)
    key = (*spec.cache_key, str(torch_device))
    with _cache_lock:
        cached = _cache.get(key) if use_cache else None
        if cached is None:
            cached = _build(spec, torch_device)
            if use_cache:
                _cache[key] = cached
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
        else:
            _cache.move_to_end(key)
    model, identity, transform = cached
    return Backbone(model, identity, transform, torch_device, batch_size)


def clear_backbone_cache() -> None:
    with _cache_lock:
        _cache.clear()


def eval_transform(
    model: torch.nn.Module, input_size: int | None = None
) -> tuple[dict[str, Any], Callable[[Image.Image], torch.Tensor]]:
    """timm's data config of ``model`` and its eval transform; ``input_size`` (square side) overrides the
    config's, as learnt weights record the side they were trained at (crop, mean, std stay timm's)."""
    from timm.data import create_transform, resolve_data_config  # lazy: timm takes seconds to import

    overrides = {"input_size": (3, input_size, input_size)} if input_size else {}
    data_config = resolve_data_config(overrides, model=model)
    return data_config, create_transform(**data_config, is_training=False)


def _build(spec: WeightsSpec, device: torch.device) -> tuple[torch.nn.Module, BackboneIdentity, Callable]:
    model, source = load_model(spec)
    model.eval()
    # The hash is taken on the CPU float32 weights, before any device move or memory-format change.
    sha = state_dict_sha256(model.state_dict())
    data_config, transform = eval_transform(model, spec.input_size)
    identity = BackboneIdentity(
        model_name=spec.architecture,
        weight_source=source,
        weights_sha256=sha,
        transform=jsonable(data_config),
        feature_dim=int(model.num_features),
    )
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    log.info("backbone ready: %s on %s", identity.describe(), device)
    return model, identity, transform
