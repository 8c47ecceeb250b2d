"""The classes a service can predict at one moment (the bundle's, then the user's): one snapshot."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from acmr_core.errors import UserClassError
from acmr_core.model.gzsl import GZSLClassifier
from acmr_core.serving.user_classes import UserClass


@dataclass(frozen=True)
class ClassSpace:
    """Immutable snapshot of every class the service can predict: the bundle's, then the user's."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    unit_attributes: np.ndarray  # (C, A) in [0, 1]
    semantic_latents: np.ndarray  # (C, latent)
    semantic_xy: np.ndarray  # (C, 2)
    classifier: GZSLClassifier  # over these classes, in this order
    user_classes: tuple[UserClass, ...] = ()

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {name.casefold(): position for position, name in enumerate(self.names)}

    def position(self, name: str) -> int:
        found = self._index.get(" ".join(str(name).split()).casefold())
        if found is None:
            raise UserClassError(f"there is no class named {str(name)[:80]!r}")
        return found


def unit_scale(attribute_matrix: np.ndarray) -> np.ndarray:
    """Per-attribute divisor mapping the bundle's attribute scale onto [0, 1] (its largest class value)."""
    scale = np.abs(np.asarray(attribute_matrix, dtype=np.float32)).max(axis=0)
    return np.where(scale > 0, scale, 1.0).astype(np.float32)
