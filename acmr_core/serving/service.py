"""The service behind the app (or anything else serving a bundle): predict, define classes, explore.

:class:`StudioService` wraps one loaded bundle. It is created once at start-up (model, backbone and latent
cache loaded, torch warmed up; placing points needs no UMAP/numba at serving time) and then shared by every
request thread:

* reads (predict, catalog, plots) use an immutable :class:`ClassSpace` snapshot, taken with one attribute
  read, so a request never sees a half-added class;
* writes (define / rename / delete / import a user class) hold one lock around "store write + classifier
  re-fit + snapshot swap", so concurrent edits are serialised and the store and classifier never disagree.

User-facing values are in [0, 1]: attribute values are mapped to and from the bundle's own attribute scale by
each attribute's largest value over the bundle's classes (the identity for binary attributes).

No Gradio, pandas or markdown here: the service returns plain data (dataclasses, dicts, lists, plotly figures)
and the app turns them into the tables and text its widgets show. Loading a bundle by
name and listing the others is :mod:`acmr_core.serving.registry`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from acmr_core.bundle.bundle import Bundle
from acmr_core.bundle.catalog import attribute_group
from acmr_core.bundle.format import load_bundle
from acmr_core.data import demo_world
from acmr_core.data.images import describe_source, load_image
from acmr_core.defaults import USER_CLASSES_DIR
from acmr_core.describe.images import MAX_EXAMPLE_IMAGES, ImageReadings
from acmr_core.describe.reader import Reading, read_description
from acmr_core.errors import ACMRError, ImageError, UserClassError, quote_value
from acmr_core.features.backbone import Backbone
from acmr_core.model.gzsl import GZSLClassifier, check_gamma
from acmr_core.model.predictor import rank
from acmr_core.serving.class_space import ClassSpace, unit_scale
from acmr_core.serving.results import AlignedClass, Prediction, RankedClass, RenderedExample
from acmr_core.serving.threads import single_torch_thread, sklearn_single_thread
from acmr_core.serving.user_classes import (
    UserClass,
    UserClassStore,
    open_store,
    parse_attributes_json,
    validate_name,
    validate_values,
)
from acmr_core.viz.latent_space import AlignmentSummary, alignment_scores, place_points, summarise_alignment
from acmr_core.viz.plots import KINDS, LatentScene, QueryPoint, latent_figure

log = logging.getLogger(__name__)

#: Two classes whose attributes (0–1) differ by more than this in at most one attribute are near-duplicates.
NEAR_DUPLICATE_DIFFERENCE = 0.25
#: "Show examples" of a class: how many renders by default, and at most.
DEFAULT_EXAMPLES = 4
MAX_EXAMPLES = 12


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 0.0


class StudioService:
    """Everything the app does with one loaded bundle (thread-safe; see the module docstring)."""

    def __init__(self, bundle: Bundle, backbone: Backbone, store: UserClassStore, bundle_name: str) -> None:
        self.bundle = bundle
        self.backbone = backbone
        self.store = store
        self.bundle_name = bundle_name
        self.device = backbone.device
        self.model = bundle.model.to(self.device).eval()
        catalog = bundle.catalog
        self.attribute_names: list[str] = list(catalog.attribute_names)
        self.attribute_groups: list[str] = [
            attribute_group(name) or "(other)" for name in self.attribute_names
        ]
        self._bundle_names: tuple[str, ...] = tuple(catalog.names)
        self._bundle_kinds: tuple[str, ...] = tuple(
            "seen" if seen else "unseen" for seen in catalog.seen_mask
        )
        self._scale = unit_scale(catalog.attribute_matrix)
        self._bundle_unit = np.clip(np.asarray(catalog.attribute_matrix, np.float32) / self._scale, 0.0, 1.0)
        self.default_gamma = float(bundle.gamma)
        cache = bundle.latent
        self._image_latents = np.asarray(cache.visual, dtype=np.float32)
        self._image_xy = np.asarray(cache.visual_xy, dtype=np.float32)
        self._image_class = np.asarray(cache.visual_labels, dtype=np.int64)
        self._image_ids = [str(item) for item in cache.image_ids]
        self._bundle_semantic = np.asarray(cache.semantic, dtype=np.float32)
        self._bundle_semantic_xy = np.asarray(cache.semantic_xy, dtype=np.float32)
        self._projection = bundle.projection
        self._write_lock = threading.Lock()
        self._default_figure: tuple[ClassSpace, go.Figure] | None = None
        self._alignment: tuple[ClassSpace, list[AlignedClass], AlignmentSummary] | None = None
        self._space = self._build_space(tuple(store.list()))

    # ---- construction ------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        bundle_dir: str | Path,
        device: str = "auto",
        user_classes_dir: str | Path = USER_CLASSES_DIR,
        warm: bool = True,
    ) -> StudioService:
        """Load a bundle, its backbone and its user-class store; warm up so the first request is fast."""
        started = time.perf_counter()
        bundle_dir = Path(bundle_dir)
        bundle = load_bundle(bundle_dir, device=device)
        backbone = bundle.create_backbone(device=device)  # checked against the bundle's backbone identity
        store = open_store(user_classes_dir, bundle_dir.name, bundle.catalog.attribute_names)
        service = cls(bundle, backbone, store, bundle_dir.name)
        if warm:
            service.warm_up()
        log.info("bundle %s ready in %.1f s", bundle_dir.name, time.perf_counter() - started)
        return service

    def warm_up(self) -> None:
        """Run one full prediction (first forward passes set up kernels) and build the latent plot once."""
        started = time.perf_counter()
        self.predict(Image.new("RGB", (224, 224), (128, 128, 128)))
        self.latent_figure()
        with single_torch_thread():
            self.bundle.prepare_fast_update(seed=0)  # so the first add does not pay for it
        log.info("warm-up took %.2f s", time.perf_counter() - started)

    # ---- the class space ---------------------------------------------------------------------------------

    def _build_space(self, user_classes: tuple[UserClass, ...]) -> ClassSpace:
        """All classes (bundle + user) with their latents, plot positions and a classifier over them."""
        user_unit = np.array([item.values for item in user_classes], dtype=np.float32).reshape(
            len(user_classes), len(self.attribute_names)
        )
        unit = np.concatenate([self._bundle_unit, user_unit])
        user_semantic = self._semantic_latents(user_unit * self._scale)
        semantic = np.concatenate([self._bundle_semantic, user_semantic])
        user_xy = self._place(user_semantic) if user_classes else np.zeros((0, 2))
        classifier = self.bundle.classifier if not user_classes else self._fit_classifier(unit * self._scale)
        return ClassSpace(
            names=self._bundle_names + tuple(item.name for item in user_classes),
            kinds=self._bundle_kinds + ("user",) * len(user_classes),
            unit_attributes=unit,
            semantic_latents=semantic,
            semantic_xy=np.concatenate([self._bundle_semantic_xy, user_xy]).astype(np.float32),
            classifier=classifier,
            user_classes=user_classes,
        )

    @torch.inference_mode()
    def _semantic_latents(self, attributes: np.ndarray) -> np.ndarray:
        if len(attributes) == 0:
            return np.zeros((0, self._bundle_semantic.shape[1]), dtype=np.float32)
        return self.bundle.semantic_latents(attributes)

    def _place(self, latents: np.ndarray) -> np.ndarray:
        with sklearn_single_thread():
            return place_points(latents, self._projection)

    def _fit_classifier(self, attributes: np.ndarray) -> GZSLClassifier:
        """The bundle's GZSL classifier with one row per user class (extra unseen classes), issue 24's fast
        update: an add trains one row, a delete none (``Bundle.fast_classifier``; rows are cached)."""
        started = time.perf_counter()
        seen_mask = np.concatenate(
            [self.bundle.catalog.seen_mask, np.zeros(len(attributes) - len(self._bundle_names), bool)]
        )
        with single_torch_thread():
            classifier = self.bundle.fast_classifier(attributes, seen_mask, seed=0)
        log.info(
            "GZSL classifier updated to %d classes in %.2f s",
            len(attributes),
            time.perf_counter() - started,
        )
        return classifier.eval()

    def _swap(self, user_classes: tuple[UserClass, ...]) -> ClassSpace:
        space = self._build_space(user_classes)
        self._space = space  # one assignment: readers see the old or the new snapshot, never a mix
        return space

    # ---- predict -----------------------------------------------------------------------------------------

    def predict(self, image: Any, gamma: float | None = None, top_k: int = 5) -> Prediction:
        """Top-k classes of an image (a path, bytes or PIL image); bad images raise ImageError."""
        loaded = load_image(image)
        features = self.backbone.features([loaded])
        return self.predict_features(features[0], gamma=gamma, top_k=top_k, image=loaded)

    @torch.inference_mode()
    def predict_features(
        self,
        features: np.ndarray,
        gamma: float | None = None,
        top_k: int = 5,
        image: Image.Image | None = None,
    ) -> Prediction:
        """The part of :meth:`predict` after the backbone: latent, calibrated scores, decoded attributes.

        ``image`` (PIL) adds the pixel measure of the familiarity where the bundle has one.
        """
        gamma = self.default_gamma if gamma is None else check_gamma(gamma)
        space = self._space  # one snapshot for the whole request
        latent, readings = self._read(np.asarray(features, dtype=np.float32).reshape(1, -1))
        decoded_unit = readings[0]
        # The bundle's one scoring path, with the classifier re-fitted over the user classes (if any).
        scores = self.bundle.trained.scores_of_latents(latent, gamma, classifier=space.classifier)
        probabilities = torch.softmax(scores.float(), dim=-1).cpu().numpy()
        (top,) = rank(probabilities, top_k)
        ranked = [RankedClass(space.names[i], space.kinds[i], probability) for i, probability in top]
        top_unit = space.unit_attributes[top[0][0]]
        latent_np = latent.float().cpu().numpy()
        xy = self._place(latent_np)[0]
        images = None if image is None else [image]
        ((familiarity, unfamiliar),) = self.bundle.assess_familiarity(features, images)
        return Prediction(
            ranked=ranked,
            decoded=dict(zip(self.attribute_names, decoded_unit.tolist(), strict=True)),
            predicted_attributes=dict(zip(self.attribute_names, top_unit.tolist(), strict=True)),
            agreement=_cosine(decoded_unit, top_unit),
            xy=(float(xy[0]), float(xy[1])),
            gamma=gamma,
            familiarity=familiarity,
            unfamiliar=unfamiliar,
        )

    # ---- render a class (demo-world bundles) ---------------------------------------------------------------

    @property
    def can_render(self) -> bool:
        """Whether classes can be drawn: only a demo-world bundle knows how its images are made."""
        return isinstance(self.bundle.provenance.get("demo_world"), Mapping)

    def render_examples(
        self, name: str, count: int = DEFAULT_EXAMPLES, gamma: float | None = None, top_k: int = 5
    ) -> list[RenderedExample]:
        """Draw ``count`` fresh images of a class with the demo renderer and predict each among all classes.

        Meant for a user-defined class (a new combination of attribute values): the model has never been
        trained on an image of it, yet should recognise it. Renders use :data:`demo_world.EXAMPLES_SEED`,
        a seed no bundle is built with, and are a pure function of the class's values.
        """
        if not self.can_render:
            raise UserClassError(
                f"bundle {self.bundle_name} is not a demo-world bundle: its images cannot be drawn"
            )
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_EXAMPLES:
            raise UserClassError(f"ask for 1 to {MAX_EXAMPLES} example images, not {quote_value(count)}")
        space = self._space
        position = space.position(name)
        values = dict(zip(self.attribute_names, space.unit_attributes[position].tolist(), strict=True))
        try:
            combination = demo_world.combination_from_attributes(values)
        except ACMRError as error:
            raise UserClassError(f"{space.names[position]!r} cannot be drawn: {error}") from None
        size = int(self.bundle.provenance["demo_world"].get("render_size", demo_world.RENDER_SIZE))
        images = [
            demo_world.render_combination(combination, demo_world.EXAMPLES_SEED, index, size)
            for index in range(count)
        ]
        features = self.backbone.features(images)
        name = space.names[position]
        return [
            RenderedExample(image, name, self.predict_features(row, gamma=gamma, top_k=top_k, image=image))
            for image, row in zip(images, features, strict=True)
        ]

    # ---- user classes ------------------------------------------------------------------------------------

    def define_class(self, name: str, attributes: Mapping[str, object]) -> dict[str, Any]:
        """Add a user class; it takes part in every prediction from the moment this returns."""
        cleaned = validate_name(name)
        values = validate_values(attributes, self.attribute_names)
        with self._write_lock:
            self._check_name_free(cleaned)
            self.store.check_room(1)  # before the re-fit: a refusal costs nothing
            candidate = UserClass(cleaned, values, time.time())
            space = self._build_space((*self._space.user_classes, candidate))  # fit first: nothing half-done
            stored = self.store.add(
                cleaned, dict(zip(self.attribute_names, values, strict=True)), self._bundle_names
            )
            self._space = replace(space, user_classes=(*self._space.user_classes, stored))
        return self.class_record(stored.name, "user", stored.values)

    def define_class_json(self, name: str, attributes_json: str) -> dict[str, Any]:
        """:meth:`define_class` with the attributes as a JSON object (the HTTP API's form)."""
        return self.define_class(name, parse_attributes_json(attributes_json))

    # ---- describing a class (issue 15): words or example images -> editor values; nothing is added ------

    def attributes_from_text(self, text: object) -> Reading:
        """Read a free description against this bundle's attributes: only what it mentions is set."""
        return read_description(text, self.attribute_names)

    def attributes_from_images(self, images: Sequence[Any]) -> ImageReadings:
        """What the model reads in 1-10 example images (semantic decoder on each image's latent), averaged.

        A bad image is refused with its own message and the others are still read; only when none can be read
        is an :class:`ImageError` raised (listing why for each).
        """
        images = [image for image in images or [] if image is not None]
        if not images:
            raise ImageError(f"no images given; choose 1 to {MAX_EXAMPLE_IMAGES} images of the new class")
        if len(images) > MAX_EXAMPLE_IMAGES:
            raise ImageError(f"{len(images)} images given; use at most {MAX_EXAMPLE_IMAGES}")
        features, labels, refused = [], [], []
        for image in images:
            try:
                # One at a time: never more than one decoded photo (up to 64 MP) in memory.
                features.append(self.backbone.features([load_image(image)])[0])
                labels.append(describe_source(image))
            except ImageError as error:
                refused.append((describe_source(image), str(error)))
        if not features:
            raise ImageError("no image could be read: " + "; ".join(message for _, message in refused))
        return ImageReadings(
            tuple(self.attribute_names),
            tuple(labels),
            self._read(np.stack(features))[1],
            tuple(refused),
        )

    @torch.inference_mode()
    def _read(self, features: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Visual latents of (images, dim) features and what ACMR's semantic decoder reads in each, as
        (images, attributes) values in [0, 1]: the one reading behind Predict and the example images."""
        latent = self.bundle.trained.latents(np.asarray(features, dtype=np.float32))
        decoded = self.model.decode_semantic(latent).float().cpu().numpy()
        return latent, np.clip(decoded / self._scale, 0.0, 1.0)

    def rename_class(self, old: str, new: str) -> dict[str, Any]:
        with self._write_lock:
            space = self._space
            renamed = self.store.rename(old, new, self._bundle_names)
            # Same classes in the same order: only a name changes, so no re-fit is needed.
            user_classes = list(space.user_classes)
            user_classes[space.position(old) - len(self._bundle_names)] = renamed
            self._space = replace(
                space,
                names=self._bundle_names + tuple(item.name for item in user_classes),
                user_classes=tuple(user_classes),
            )
        return self.class_record(renamed.name, "user", renamed.values)

    def delete_class(self, name: str) -> dict[str, Any]:
        """Delete a user class (the bundle's own classes cannot be deleted)."""
        if not isinstance(name, str) or not name.strip():
            raise UserClassError("no class name given; pick one of your classes to delete")
        with self._write_lock:
            space = self._space
            position = space.position(name)
            n_bundle = len(self._bundle_names)
            if position < n_bundle:
                raise UserClassError(
                    f"{space.names[position]!r} is one of the model's classes; only yours can be deleted"
                )
            remaining = tuple(item for i, item in enumerate(space.user_classes) if i != position - n_bundle)
            new_space = self._build_space(remaining)  # re-fit first, so a failure leaves everything as it was
            removed = self.store.delete(space.names[position])
            self._space = new_space
        return self.class_record(removed.name, "user", removed.values)

    def import_classes(self, text: str) -> list[str]:
        """Import an export (all or nothing); the classifier is re-fitted once for the whole file."""
        with self._write_lock:
            added = self.store.import_json(text, self._bundle_names)
            try:
                self._swap(tuple(self.store.list()))
            except BaseException:
                for item in added:  # keep the store and the classifier in agreement
                    self.store.delete(item.name)
                raise
        return [item.name for item in added]

    def export_classes(self) -> str:
        return self.store.export_json()

    def _check_name_free(self, name: str) -> None:
        folded = name.casefold()
        if any(existing.casefold() == folded for existing in self._space.names):
            raise UserClassError(f"a class named {name!r} already exists; choose another name")

    # ---- catalog and editor helpers ----------------------------------------------------------------------

    def class_record(self, name: str, kind: str, unit_values: Sequence[float]) -> dict[str, Any]:
        values = [round(float(value), 6) for value in unit_values]
        return {
            "name": name,
            "kind": kind,
            "attributes": dict(zip(self.attribute_names, values, strict=True)),
        }

    def catalog(self) -> dict[str, Any]:
        """Attribute names and every class (bundle and user) with its kind and attributes in [0, 1]."""
        space = self._space
        return {
            "bundle": self.bundle_name,
            "attributes": list(self.attribute_names),
            "classes": [
                self.class_record(name, kind, space.unit_attributes[i])
                for i, (name, kind) in enumerate(zip(space.names, space.kinds, strict=True))
            ],
        }

    def class_names(self) -> list[str]:
        return list(self._space.names)

    def user_class_names(self) -> list[str]:
        return [item.name for item in self._space.user_classes]

    def class_values(self, name: str) -> dict[str, float]:
        """A class's attributes in [0, 1] (to start a new class from it)."""
        space = self._space
        row = space.unit_attributes[space.position(name)]
        return dict(zip(self.attribute_names, row.tolist(), strict=True))

    def near_duplicates(self, name: str) -> list[str]:
        """Other classes whose attributes differ from ``name``'s in at most one attribute (confusable)."""
        space = self._space
        own = space.position(name)
        differing = (
            np.abs(space.unit_attributes - space.unit_attributes[own]) > NEAR_DUPLICATE_DIFFERENCE
        ).sum(axis=1)
        return [space.names[i] for i in np.flatnonzero(differing <= 1) if i != own]

    def user_classes(self) -> tuple[UserClass, ...]:
        """The user's classes, oldest first (names and values in [0, 1], attribute order)."""
        return self._space.user_classes

    def class_counts(self) -> dict[str, int]:
        """How many classes of each kind ("seen", "unseen", "user") the service can predict."""
        kinds = self._space.kinds
        return {kind: kinds.count(kind) for kind in KINDS}

    @property
    def caveat(self) -> str:
        """What the bundle's maker says it reads poorly (e.g. the demo's random backbone), or ""."""
        return str(self.bundle.provenance.get("caveat") or "")

    @property
    def backbone_description(self) -> str:
        return self.backbone.identity.describe()

    # ---- latent space ------------------------------------------------------------------------------------

    def latent_scene(self, space: ClassSpace | None = None) -> LatentScene:
        space = space or self._space
        return LatentScene(
            class_names=space.names,
            class_kinds=space.kinds,
            class_xy=space.semantic_xy,
            image_xy=self._image_xy,
            image_class=self._image_class,
            image_ids=self._image_ids,
        )

    def latent_figure(
        self,
        classes: Collection[str] | None = None,
        kinds: Collection[str] = KINDS,
        query: QueryPoint | None = None,
        highlight: str | None = None,
    ) -> go.Figure:
        """The latent-space plot; the unfiltered figure is built once per class snapshot and reused."""
        space = self._space
        unfiltered = not classes and set(kinds) == set(KINDS) and query is None and not highlight
        cached = self._default_figure
        if unfiltered and cached is not None and cached[0] is space:
            return cached[1]
        figure = latent_figure(
            self.latent_scene(space), classes=classes, kinds=kinds, query=query, highlight=highlight
        )
        if unfiltered:
            self._default_figure = (space, figure)
        return figure

    def alignment(self) -> list[AlignedClass]:
        """Per-class alignment (user classes have no images: only their nearest images are given)."""
        return self._alignment_of(self._space)[0]

    def alignment_summary(self) -> AlignmentSummary:
        """The overall alignment figure over the classes with images (see :class:`AlignmentSummary`)."""
        return self._alignment_of(self._space)[1]

    def _alignment_of(self, space: ClassSpace) -> tuple[list[AlignedClass], AlignmentSummary]:
        cached = self._alignment
        if cached is not None and cached[0] is space:
            return cached[1], cached[2]
        scores = alignment_scores(self._image_latents, self._image_class, space.semantic_latents)
        aligned = [
            AlignedClass(
                name=space.names[item.class_index],
                kind=space.kinds[item.class_index],
                own_rank=item.own_rank,
                own_is_nearest=item.own_is_nearest,
                distance=item.distance,
                nearest=space.names[item.nearest_class],
            )
            for item in scores
        ]
        summary = summarise_alignment(scores)
        self._alignment = (space, aligned, summary)
        return aligned, summary
