"""The classes one visitor can predict at one moment (the bundle's, then the visitor's): one snapshot, and
how a snapshot is built from a list of user classes."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from acmr_core.bundle.bundle import Bundle
from acmr_core.errors import UserClassError
from acmr_core.model.gzsl import GZSLClassifier, first_rows
from acmr_core.serving.separability import Separability, SeparabilityGuard
from acmr_core.serving.threads import single_torch_thread, sklearn_single_thread
from acmr_core.serving.user_classes import UserClass
from acmr_core.serving.validation import fold_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassSpace:
    """Immutable snapshot of every class a visitor can predict: the bundle's, then the visitor's."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    unit_attributes: np.ndarray  # (C, A) in [0, 1]
    semantic_latents: np.ndarray  # (C, latent)
    semantic_xy: np.ndarray  # (C, 2)
    classifier: GZSLClassifier  # over these classes, in this order
    user_classes: tuple[UserClass, ...] = ()
    #: The classifier is the full re-fit over these classes (not the fast rows an edit is answered with).
    refined: bool = False
    #: Per user class (same order), the verdict of the separability guard when it was added (issue 32):
    #: the classes it cannot be told apart from; it stays with the class.
    verdicts: tuple[Separability, ...] = ()

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {fold_name(name): position for position, name in enumerate(self.names)}

    def position(self, name: str) -> int:
        found = self._index.get(fold_name(name))
        if found is None:
            raise UserClassError(f"there is no class named {str(name)[:80]!r}")
        return found

    def has(self, name: str) -> bool:
        return fold_name(name) in self._index

    def verdict(self, name: str) -> Separability | None:
        """The separability verdict a user class was added with (``None``: a bundle class, or none kept)."""
        position = self.position(name) - (len(self.names) - len(self.user_classes))
        return self.verdicts[position] if 0 <= position < len(self.verdicts) else None

    def warning(self, name: str) -> str:
        """The warning that stays with a user class ("": none)."""
        verdict = self.verdict(name)
        return "" if verdict is None else verdict.message()


def unit_scale(attribute_matrix: np.ndarray) -> np.ndarray:
    """Per-attribute divisor mapping the bundle's attribute scale onto [0, 1] (its largest class value)."""
    scale = np.abs(np.asarray(attribute_matrix, dtype=np.float32)).max(axis=0)
    return np.where(scale > 0, scale, 1.0).astype(np.float32)


class SpaceBuilder:
    """Builds the :class:`ClassSpace` of a bundle plus a list of user classes (thread-safe, no state but
    the bundle's caches): semantic latents, plot positions and the fast-updated classifier."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        catalog = bundle.catalog
        self.attribute_names: tuple[str, ...] = tuple(catalog.attribute_names)
        self.bundle_names: tuple[str, ...] = tuple(catalog.names)
        self.scale = unit_scale(catalog.attribute_matrix)
        cache = bundle.latent
        self.base = ClassSpace(
            names=self.bundle_names,
            kinds=catalog.kinds,
            unit_attributes=np.clip(np.asarray(catalog.attribute_matrix, np.float32) / self.scale, 0.0, 1.0),
            semantic_latents=np.asarray(cache.semantic, dtype=np.float32),
            semantic_xy=np.asarray(cache.semantic_xy, dtype=np.float32),
            classifier=bundle.classifier,
        )
        self.guard = SeparabilityGuard(bundle, self.scale, self.attribute_names)

    def judge(self, space: ClassSpace, unit_values: np.ndarray) -> Separability:
        """Whether a class with ``unit_values`` (in [0, 1]) could be told apart from every class of
        ``space`` (:mod:`acmr_core.serving.separability`); fits (and caches) the row an add would."""
        # The fast rows the add will answer with (a refined snapshot's re-fit is replaced by them at the add).
        classifier = self._fit_classifier(space.unit_attributes * self.scale) if space.refined else None
        with single_torch_thread():
            return self.guard.judge(
                space.names, space.kinds, space.unit_attributes, space.semantic_latents,
                classifier or space.classifier, np.asarray(unit_values, dtype=np.float32),
            )  # fmt: skip

    def build(
        self, user_classes: tuple[UserClass, ...], verdicts: tuple[Separability, ...] | None = None
    ) -> ClassSpace:
        """The bundle's classes then ``user_classes``, with a classifier over all of them. ``verdicts``: each
        class's separability verdict, in order; judged here, each against the classes before it, if not
        given (a visitor's classes rebuilt from the store get the verdicts their adds were given)."""
        if not user_classes:
            return self.base
        if verdicts is None or len(verdicts) != len(user_classes):
            return self._build_judged(user_classes, tuple(verdicts or ()))
        base = self.base
        user_unit = np.array([item.values for item in user_classes], dtype=np.float32).reshape(
            len(user_classes), len(self.attribute_names)
        )
        unit = np.concatenate([base.unit_attributes, user_unit])
        user_semantic = self.semantic_latents(user_unit * self.scale)
        return ClassSpace(
            names=base.names + tuple(item.name for item in user_classes),
            kinds=base.kinds + ("user",) * len(user_classes),
            unit_attributes=unit,
            semantic_latents=np.concatenate([base.semantic_latents, user_semantic]),
            semantic_xy=np.concatenate([base.semantic_xy, self.place(user_semantic)]).astype(np.float32),
            classifier=self._fit_classifier(unit * self.scale),
            user_classes=user_classes,
            verdicts=tuple(verdicts),
        )

    def _build_judged(
        self, user_classes: tuple[UserClass, ...], known: tuple[Separability, ...]
    ) -> ClassSpace:
        """:meth:`build`, judging each class past the ``known`` verdicts against the bundle's classes and the
        user classes before it, in order (what its add would have said). One build: each class is judged
        against a prefix of it (the fast classifier's rows are each class's own, so a prefix's classifier is
        the first rows)."""
        verdicts = list(known[: len(user_classes)])
        placeholder = Separability((), {})
        space = self.build(user_classes, (*verdicts, *[placeholder] * (len(user_classes) - len(verdicts))))
        n_bundle = len(self.bundle_names)
        for position in range(len(verdicts), len(user_classes)):
            end = n_bundle + position
            prefix = replace(
                space, names=space.names[:end], kinds=space.kinds[:end],
                unit_attributes=space.unit_attributes[:end], semantic_latents=space.semantic_latents[:end],
                classifier=first_rows(space.classifier, end),
            )  # fmt: skip
            verdicts.append(self.judge(prefix, space.unit_attributes[end]))
        return replace(space, verdicts=tuple(verdicts))

    @torch.inference_mode()
    def semantic_latents(self, attributes: np.ndarray) -> np.ndarray:
        """Semantic latents of (n, attributes) rows on the bundle's own attribute scale."""
        if len(attributes) == 0:
            return np.zeros((0, self.base.semantic_latents.shape[1]), dtype=np.float32)
        return self.bundle.semantic_latents(attributes)

    def place(self, latents: np.ndarray) -> np.ndarray:
        """2-D map positions of latents: ``Bundle.place`` (the one placement), one thread (a tiny query)."""
        if len(latents) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        with sklearn_single_thread():
            return self.bundle.place(latents)

    def full_classifier(self, space: ClassSpace) -> GZSLClassifier:
        """The full re-fit over a snapshot's classes (``Bundle.refit_classifier``: every row trained, seconds
        on one core); what a background refinement swaps in for the fast rows."""
        started = time.perf_counter()
        attributes = space.unit_attributes * self.scale
        with single_torch_thread():
            classifier = self.bundle.refit_classifier(attributes, self._seen_mask(attributes), seed=0)
        log.info(
            "refined a classifier over %d classes in %.1f s", len(space.names), time.perf_counter() - started
        )
        return classifier.eval()

    def _seen_mask(self, attributes: np.ndarray) -> np.ndarray:
        """The bundle's seen mask, then False for every user class (rows past the bundle's)."""
        user = len(attributes) - len(self.bundle_names)
        return np.concatenate([self.bundle.catalog.seen_mask, np.zeros(user, bool)])

    def _fit_classifier(self, attributes: np.ndarray) -> GZSLClassifier:
        """The bundle's GZSL classifier with one row per user class (extra unseen classes), issue 24's fast
        update: an add trains one row, a delete none (``Bundle.fast_classifier``; rows are cached)."""
        started = time.perf_counter()
        with single_torch_thread():
            classifier = self.bundle.fast_classifier(attributes, self._seen_mask(attributes), seed=0)
        log.info(
            "GZSL classifier updated to %d classes in %.2f s", len(attributes), time.perf_counter() - started
        )
        return classifier.eval()
