"""The read side of the service: everything that reads one class snapshot (:class:`ClassSpace`) of a loaded
bundle: predictions, drawn examples, the catalog, the latent plot and the alignment figures, and reading a
class's attributes from words or example images.

Shared by every visitor and every request thread: it holds the bundle, the backbone and caches keyed by the
snapshot, never a visitor's state. User-facing values are in [0, 1]: attribute values are mapped to and from
the bundle's own attribute scale by each attribute's largest value over the bundle's classes (the identity
for binary attributes).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from acmr_core.bundle.bundle import Bundle
from acmr_core.data import demo_world
from acmr_core.data.classes import attribute_group
from acmr_core.data.images import describe_source, load_image
from acmr_core.describe.images import MAX_EXAMPLE_IMAGES, ImageReadings
from acmr_core.describe.reader import Reading, read_description
from acmr_core.errors import ACMRError, ImageError, UserClassError, quote_value
from acmr_core.features.backbone import Backbone
from acmr_core.model.gzsl import check_gamma
from acmr_core.model.predictor import rank
from acmr_core.serving.class_space import ClassSpace, SpaceBuilder
from acmr_core.serving.results import (
    AlignedClass,
    DraftPreview,
    ImageMatch,
    NearClass,
    NearImage,
    Prediction,
    RankedClass,
    RenderedExample,
)
from acmr_core.serving.separability import Separability
from acmr_core.serving.test_images import SplitImages
from acmr_core.serving.threads import single_torch_thread
from acmr_core.viz.latent_space import AlignmentSummary, alignment_scores, summarise_alignment
from acmr_core.viz.plots import KINDS, LatentScene, QueryPoint, latent_figure

#: "Show examples" of a class: how many renders by default, and at most.
DEFAULT_EXAMPLES = 4
MAX_EXAMPLES = 12
#: A draft class's preview lists this many nearest classes.
PREVIEW_NEAREST = 3
#: Snapshots whose unfiltered plot and alignment are kept (the bundle's own, and recent visitors').
CACHED_SNAPSHOTS = 32


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 0.0


class _SnapshotCache:
    """Values computed from a snapshot, kept for the most recent :data:`CACHED_SNAPSHOTS` snapshots."""

    def __init__(self) -> None:
        self._entries: OrderedDict[int, tuple[ClassSpace, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, space: ClassSpace, make: Any) -> Any:
        key = id(space)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is space:  # the snapshot itself is kept: its id is not reused
                self._entries.move_to_end(key)
                return entry[1]
        value = make()
        with self._lock:
            self._entries[key] = (space, value)
            while len(self._entries) > CACHED_SNAPSHOTS:
                self._entries.popitem(last=False)
        return value


def resolved_gamma(gamma: object, default: float) -> float:
    """The γ a request asked for (checked: one line for a bad one), or the bundle's own."""
    return default if gamma is None else check_gamma(gamma)


class ReadSide:
    """Predict, draw, list and plot against a given class snapshot (thread-safe, visitor-free)."""

    def __init__(self, builder: SpaceBuilder, backbone: Backbone | None, bundle_name: str) -> None:
        """``backbone`` is None for a features-only bundle (it reads no images)."""
        self.builder = builder
        self.bundle: Bundle = builder.bundle
        self.backbone = backbone
        self.bundle_name = bundle_name
        self.device = backbone.device if backbone is not None else self.bundle.device
        self.test_images = SplitImages(self.bundle)
        self.model = self.bundle.model.to(self.device).eval()
        self.attribute_names: list[str] = list(builder.attribute_names)
        self.attribute_groups: list[str] = [
            attribute_group(name) or "(other)" for name in self.attribute_names
        ]
        self.default_gamma = float(self.bundle.gamma)
        cache = self.bundle.latent
        self._image_latents = np.asarray(cache.visual, dtype=np.float32)
        self._image_xy = np.asarray(cache.visual_xy, dtype=np.float32)
        self._image_class = np.asarray(cache.visual_labels, dtype=np.int64)
        self._image_ids = [str(item) for item in cache.image_ids]
        self._figures = _SnapshotCache()
        self._alignments = _SnapshotCache()

    def warm_up(self) -> None:
        """Run one full prediction (first forward passes set up kernels) and build the latent plot once."""
        base = self.builder.base
        if self.backbone is None:
            self.predict_test_image(base, 0)
        else:
            self.predict(base, Image.new("RGB", (224, 224), (128, 128, 128)))
        self.latent_figure(base)
        with single_torch_thread():
            self.bundle.prepare_fast_update(seed=0)  # so the first add does not pay for it

    # ---- predict -----------------------------------------------------------------------------------------

    def predict(
        self, space: ClassSpace, image: Any, gamma: float | None = None, top_k: int = 5
    ) -> Prediction:
        """Top-k classes of an image (a path, bytes or PIL image); bad images raise ImageError."""
        self.test_images.refuse_images()
        loaded = load_image(image)
        features = self.backbone.features([loaded])
        return self.predict_features(space, features[0], gamma=gamma, top_k=top_k, image=loaded)

    @torch.inference_mode()
    def predict_features(
        self,
        space: ClassSpace,
        features: np.ndarray,
        gamma: float | None = None,
        top_k: int = 5,
        image: Image.Image | None = None,
    ) -> Prediction:
        """The part of :meth:`predict` after the backbone: latent, calibrated scores, decoded attributes.

        ``image`` (PIL) adds the pixel measure of the familiarity where the bundle has one.
        """
        chosen_gamma = resolved_gamma(gamma, self.default_gamma)  # a bad γ is refused before any model work
        latent, readings = self.read(np.asarray(features, dtype=np.float32).reshape(1, -1))
        images = None if image is None else [image]
        (familiar,) = self.bundle.assess_familiarity(features, images)
        return self._answer(space, latent, readings[0], chosen_gamma, top_k, familiar)

    @torch.inference_mode()
    def predict_test_image(
        self, space: ClassSpace, position: int, gamma: float | None = None, top_k: int = 5
    ) -> Prediction:
        """The answer for a test image of the latent cache (``position``: its row), from its cached latent:
        what a features-only model offers instead of an upload."""
        chosen_gamma = resolved_gamma(gamma, self.default_gamma)
        self.test_images.at(position)  # a one-line error for a position that is no test image
        latent = torch.from_numpy(self.test_images.latents[position : position + 1]).to(self.device)
        familiar = self.test_images.familiarity(position)
        return self._answer(space, latent, self.decode(latent)[0], chosen_gamma, top_k, familiar)

    def _answer(
        self,
        space: ClassSpace,
        latent: torch.Tensor,
        decoded_unit: np.ndarray,
        gamma: float,
        top_k: int,
        familiar: tuple[float, bool],
    ) -> Prediction:
        """A :class:`Prediction` from an image's visual latent (1, d) and what the decoder reads in it."""
        # The bundle's one scoring path, with the snapshot's classifier (rows for the user classes, if any).
        scores = self.bundle.trained.scores_of_latents(latent, gamma, classifier=space.classifier)
        probabilities = torch.softmax(scores.float(), dim=-1).cpu().numpy()
        (top,) = rank(probabilities, top_k)
        ranked = [RankedClass(space.names[i], space.kinds[i], probability) for i, probability in top]
        top_unit = space.unit_attributes[top[0][0]]
        latent_np = latent.float().cpu().numpy()
        xy = self.builder.place(latent_np)[0]
        familiarity, unfamiliar = familiar
        return Prediction(
            ranked=ranked,
            decoded=dict(zip(self.attribute_names, decoded_unit.tolist(), strict=True)),
            predicted_attributes=dict(zip(self.attribute_names, top_unit.tolist(), strict=True)),
            agreement=_cosine(decoded_unit, top_unit),
            xy=(float(xy[0]), float(xy[1])),
            gamma=gamma,
            familiarity=familiarity,
            unfamiliar=unfamiliar,
            latent=tuple(latent_np[0].tolist()),
            warning=space.warning(ranked[0].name),
        )

    @torch.inference_mode()
    def read(self, features: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Visual latents of (images, dim) features and what ACMR's semantic decoder reads in each, as
        (images, attributes) values in [0, 1]: the one reading behind Predict and the example images."""
        latent = self.bundle.trained.latents(np.asarray(features, dtype=np.float32))
        return latent, self.decode(latent)

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> np.ndarray:
        """What the semantic decoder reads in visual latents (images, d): (images, attributes) in [0, 1]."""
        decoded = self.model.decode_semantic(latent).float().cpu().numpy()
        return np.clip(decoded / self.builder.scale, 0.0, 1.0)

    # ---- a draft class, before it is added (issue 25's live preview) ------------------------------------

    def preview(
        self, space: ClassSpace, unit_values: Sequence[float], image_latent: Sequence[float] | None = None
    ) -> DraftPreview:
        """Where a draft class (values in [0, 1]) lands on the map, its nearest classes, and, given the last
        image's latent, the rank of its description among the snapshot's for that image, and the
        separability guard's verdict on a complete draft (it fits, and caches for *Add*, the row an add
        trains)."""
        unit = np.asarray(unit_values, dtype=np.float32).reshape(1, -1)
        latent = self.builder.semantic_latents(unit * self.builder.scale)
        xy = self.builder.place(latent)[0]
        distances = np.linalg.norm(space.semantic_latents - latent, axis=1)
        nearest = tuple(
            NearClass(space.names[i], space.kinds[i], float(distances[i]))
            for i in np.argsort(distances, kind="stable")[:PREVIEW_NEAREST]
        )
        image = None
        if image_latent is not None and len(image_latent):
            z = np.asarray(image_latent, dtype=np.float32).reshape(1, -1)
            to_classes = np.linalg.norm(space.semantic_latents - z, axis=1)
            to_draft = float(np.linalg.norm(latent - z))
            closest = int(np.argmin(to_classes))
            image = ImageMatch(
                rank=1 + int((to_classes < to_draft).sum()),
                candidates=len(space.names) + 1,
                distance=to_draft,
                nearest=space.names[closest],
                nearest_distance=float(to_classes[closest]),
            )
        images = tuple(
            NearImage(item.image_id, item.class_name, item.kind, distance)
            for item, distance in self.test_images.nearest(latent[0])
        )
        xy_pair = (float(xy[0]), float(xy[1]))
        return DraftPreview(xy_pair, nearest, image, self._judge_draft(space, unit[0]), images)

    def _judge_draft(self, space: ClassSpace, unit: np.ndarray) -> Separability | None:
        """The guard's verdict on a draft as it would be added (a demo world's empty groups filled in); None
        while it cannot be added (two values of one group on: the add refuses it, saying why)."""
        try:
            completed, _ = self.complete(tuple(float(value) for value in unit))
        except UserClassError:
            return None
        return self.builder.judge(space, np.asarray(completed, dtype=np.float32))

    # ---- render a class (demo-world bundles) ---------------------------------------------------------------

    @property
    def can_render(self) -> bool:
        """Whether classes can be drawn: only a demo-world bundle knows how its images are made (its record is
        checked when images are drawn, so a bad one refuses a render, not the adding of a class)."""
        return isinstance(self.bundle.provenance.get(demo_world.DemoWorldRecord.KEY), Mapping)

    def check_drawable(self, values: Sequence[float]) -> None:
        """Refuse, naming the group, a class a demo world cannot draw (two colours, no background): kept, it
        could never be shown (:meth:`complete` first fills in what can be assumed); other bundles accept any
        values."""
        if not self.can_render:
            return
        try:
            demo_world.combination_from_attributes(dict(zip(self.attribute_names, values, strict=True)))
        except ACMRError as error:
            raise UserClassError(f"this class cannot be added: {error}") from None

    def complete(self, values: Sequence[float]) -> tuple[tuple[float, ...], dict[str, str]]:
        """A demo-world class with every empty group filled in by the world's most common value, and what
        was assumed (``{group: value}``, to tell the visitor); other bundles' values are left as they are.
        A group that cannot be completed (two values on) is refused, naming it."""
        if not self.can_render:
            return tuple(values), {}
        try:
            completed, assumed = demo_world.complete_attributes(
                dict(zip(self.attribute_names, values, strict=True)), self._typical_values
            )
        except ACMRError as error:
            raise UserClassError(f"this class cannot be added: {error}") from None
        return tuple(float(completed.get(name, 0.0)) for name in self.attribute_names), assumed

    @functools.cached_property
    def _typical_values(self) -> dict[str, str]:
        return demo_world.typical_values(self.builder.base.unit_attributes, self.attribute_names)

    def render_examples(
        self,
        space: ClassSpace,
        name: str,
        count: int = DEFAULT_EXAMPLES,
        gamma: float | None = None,
        top_k: int = 5,
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
        position = space.position(name)
        values = dict(zip(self.attribute_names, space.unit_attributes[position].tolist(), strict=True))
        try:
            combination = demo_world.combination_from_attributes(values)
        except ACMRError as error:
            raise UserClassError(f"{space.names[position]!r} cannot be drawn: {error}") from None
        size = self._render_size()
        images = [
            demo_world.render_combination(combination, demo_world.EXAMPLES_SEED, index, size)
            for index in range(count)
        ]
        features = self.backbone.features(images)
        name = space.names[position]
        return [
            RenderedExample(image, name, self.predict_features(space, row, gamma, top_k, image=image))
            for image, row in zip(images, features, strict=True)
        ]

    def _render_size(self) -> int:
        """The recorded render size, as evaluation draws this bundle's images."""
        try:
            record = demo_world.DemoWorldRecord.from_provenance(self.bundle.provenance)
        except ACMRError as error:
            raise UserClassError(f"bundle {self.bundle_name}: {error}") from None
        return record.render_size if record is not None else demo_world.RENDER_SIZE

    # ---- describing a class (issue 15): words or example images -> editor values; nothing is added ------

    def attributes_from_text(self, text: object) -> Reading:
        """Read a free description against this bundle's attributes: only what it mentions is set."""
        return read_description(text, self.attribute_names)

    def attributes_from_images(self, images: Sequence[Any]) -> ImageReadings:
        """What the model reads in 1-10 example images (semantic decoder on each image's latent), averaged.

        A bad image is refused with its own message and the others are still read; only when none can be read
        is an :class:`ImageError` raised (listing why for each).
        """
        self.test_images.refuse_images()
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
            tuple(self.attribute_names), tuple(labels), self.read(np.stack(features))[1], tuple(refused)
        )

    # ---- catalog -----------------------------------------------------------------------------------------

    def class_record(self, name: str, kind: str, unit_values: Sequence[float]) -> dict[str, Any]:
        values = [round(float(value), 6) for value in unit_values]
        return {
            "name": name,
            "kind": kind,
            "attributes": dict(zip(self.attribute_names, values, strict=True)),
        }

    def catalog(self, space: ClassSpace) -> dict[str, Any]:
        """Attribute names and every class (bundle and user) with its kind and attributes in [0, 1]."""
        return {
            "bundle": self.bundle_name,
            "attributes": list(self.attribute_names),
            "classes": [
                self.class_record(name, kind, space.unit_attributes[i])
                for i, (name, kind) in enumerate(zip(space.names, space.kinds, strict=True))
            ],
        }

    def class_values(self, space: ClassSpace, name: str) -> dict[str, float]:
        """A class's attributes in [0, 1] (to start a new class from it)."""
        row = space.unit_attributes[space.position(name)]
        return dict(zip(self.attribute_names, row.tolist(), strict=True))

    def near_duplicates(self, space: ClassSpace, name: str) -> list[str]:
        """Other classes whose descriptions differ from ``name``'s in at most one attribute group (a shape
        swap turns two one-hot entries, but is one difference). Whether the model can tell them apart is the
        separability guard's call (:meth:`ClassSpace.verdict`), from its own evidence."""
        own = space.position(name)
        differing = self.builder.guard.differing_groups(space.unit_attributes[own], space.unit_attributes)
        return [space.names[i] for i in np.flatnonzero(differing.sum(axis=1) <= 1) if i != own]

    @staticmethod
    def class_counts(space: ClassSpace) -> dict[str, int]:
        """How many classes of each kind ("seen", "unseen", "user") the snapshot can predict."""
        return {kind: space.kinds.count(kind) for kind in KINDS}

    @property
    def caveat(self) -> str:
        """What the bundle's maker says it reads poorly (e.g. the demo's random backbone), or ""."""
        return str(self.bundle.provenance.get("caveat") or "")

    @property
    def backbone_description(self) -> str:
        if self.backbone is None:  # features-only: what identifies its features file
            identity = self.bundle.identity
            return f"none ({identity.weight_source}, sha256 {identity.weights_sha256[:12]})"
        return self.backbone.identity.describe()

    # ---- latent space ------------------------------------------------------------------------------------

    def latent_scene(self, space: ClassSpace) -> LatentScene:
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
        space: ClassSpace,
        classes: Collection[str] | None = None,
        kinds: Collection[str] = KINDS,
        query: QueryPoint | None = None,
        highlight: str | None = None,
        draft: QueryPoint | None = None,
        photos: bool = True,
        shared: bool = False,
    ) -> go.Figure:
        """The latent-space plot; the unfiltered figure is built once per class snapshot and reused.
        ``shared``: the user classes are everyone's (not called "yours")."""

        def make() -> go.Figure:
            return latent_figure(
                self.latent_scene(space), classes=classes, kinds=kinds, query=query, highlight=highlight,
                draft=draft, photos=photos, shared=shared,
            )  # fmt: skip

        plain = query is None and draft is None and not highlight and photos
        unfiltered = not classes and set(kinds) == set(KINDS) and plain
        return self._figures.get(space, make) if unfiltered else make()

    def alignment(self, space: ClassSpace) -> tuple[list[AlignedClass], AlignmentSummary]:
        """Per-class alignment (user classes have no images: only their nearest images are given), and the
        overall figure over the classes with images (see :class:`AlignmentSummary`)."""
        return self._alignments.get(space, lambda: self._alignment_of(space))

    def _alignment_of(self, space: ClassSpace) -> tuple[list[AlignedClass], AlignmentSummary]:
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
        return aligned, summarise_alignment(scores)
