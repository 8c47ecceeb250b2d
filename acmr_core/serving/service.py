"""The service behind the app (or anything else serving a bundle): predict, define classes, explore.

:class:`StudioService` is a thin front, bound to one visitor, over two shared sides of one loaded bundle:

* the read side (:class:`~acmr_core.serving.read_side.ReadSide`): predict, draw examples, catalog, plots;
  it reads one immutable class snapshot per request, so a request never sees a half-added class;
* the write side (:class:`~acmr_core.serving.visitors.VisitorClasses`): each visitor's own user classes,
  their snapshots, bounds and eviction.

It is created once at start-up (model, backbone and latent cache loaded, torch warmed up) for the store's
default visitor; :meth:`StudioService.for_visitor` gives the same service as another visitor sees it (no
copy of the model). With ``per_visitor=False`` (one local user, a curated deployment) every visitor shares
one set of classes; with ``per_visitor=True`` (a public server) each sees only their own.

No Gradio, pandas or markdown here: the service returns plain data (dataclasses, dicts, lists, plotly figures)
and the app turns them into the tables and text its widgets show. Loading a bundle by name and listing the
others is :mod:`acmr_core.serving.registry`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from acmr_core.bundle.bundle import Bundle
from acmr_core.bundle.format import load_bundle
from acmr_core.defaults import default_user_classes_dir
from acmr_core.describe.images import ImageReadings
from acmr_core.describe.reader import Reading
from acmr_core.features.backbone import Backbone
from acmr_core.serving.class_space import ClassSpace, SpaceBuilder
from acmr_core.serving.read_side import DEFAULT_EXAMPLES, ReadSide
from acmr_core.serving.results import AlignedClass, DraftPreview, Prediction, RenderedExample
from acmr_core.serving.test_images import SplitImage
from acmr_core.serving.user_classes import UserClass, UserClassStore, open_store
from acmr_core.serving.validation import parse_attributes_json, validate_values
from acmr_core.serving.visitors import VisitorClasses
from acmr_core.viz.latent_space import AlignmentSummary

log = logging.getLogger(__name__)


class StudioService:
    """Everything the app does with one loaded bundle, as one visitor sees it (thread-safe)."""

    def __init__(
        self,
        bundle: Bundle,
        backbone: Backbone | None,
        store: UserClassStore,
        bundle_name: str,
        *,
        per_visitor: bool = False,
        refine: bool = False,
    ) -> None:
        builder = SpaceBuilder(bundle)
        self.reads = ReadSide(builder, backbone, bundle_name)
        self.classes = VisitorClasses(
            builder, store, per_visitor=per_visitor, check_values=self.reads.check_drawable, refine=refine
        )
        self.visitor: str | None = None

    @classmethod
    def open(
        cls,
        bundle_dir: str | Path,
        device: str = "auto",
        user_classes_dir: str | Path | None = None,
        warm: bool = True,
        per_visitor: bool = False,
        refine: bool = False,
    ) -> StudioService:
        """Load a bundle, its backbone and its user-class store; warm up so the first request is fast.

        ``user_classes_dir`` defaults to :func:`acmr_core.defaults.default_user_classes_dir`. ``refine``:
        after each edit, re-fit the visitor's whole classifier in the background and swap it in (see
        :mod:`acmr_core.serving.visitors`); off, an edit's fast classifier update stays.
        """
        started = time.perf_counter()
        bundle_dir = Path(bundle_dir)
        bundle = load_bundle(bundle_dir, device=device)
        # Checked against the bundle's backbone identity; a features-only bundle has none (reads no images).
        backbone = None if bundle.features_only else bundle.create_backbone(device=device)
        folder = default_user_classes_dir() if user_classes_dir is None else Path(user_classes_dir)
        store = open_store(folder, bundle_dir.name, bundle.catalog.attribute_names, per_visitor=per_visitor)
        service = cls(bundle, backbone, store, bundle_dir.name, per_visitor=per_visitor, refine=refine)
        if warm:
            service.warm_up()
        log.info("bundle %s ready in %.1f s", bundle_dir.name, time.perf_counter() - started)
        return service

    def for_visitor(self, visitor: str | None) -> StudioService:
        """This service as ``visitor`` sees it (their classes only, where classes are per visitor)."""
        view = copy.copy(self)  # shares both sides: the model, backbone, store and snapshots
        view.visitor = visitor
        return view

    @property
    def shares_classes(self) -> bool:
        """Whether every visitor sees the same user classes (``--shared-classes``): then they are nobody's
        own, and the app does not call them "yours"."""
        return not self.classes.per_visitor

    def warm_up(self) -> None:
        """Run one full prediction (first forward passes set up kernels) and build the latent plot once."""
        started = time.perf_counter()
        self.reads.warm_up()
        log.info("warm-up took %.2f s", time.perf_counter() - started)

    # ---- what the bundle is ------------------------------------------------------------------------------

    @property
    def bundle(self) -> Bundle:
        return self.reads.bundle

    @property
    def backbone(self) -> Backbone | None:
        """The bundle's backbone; None for a features-only bundle (:attr:`features_only`)."""
        return self.reads.backbone

    @property
    def features_only(self) -> bool:
        """The model reads precomputed features, not images: it offers its test images instead of uploads."""
        return self.reads.test_images.features_only

    @property
    def store(self) -> UserClassStore:
        return self.classes.store

    @property
    def bundle_name(self) -> str:
        return self.reads.bundle_name

    @property
    def device(self) -> Any:
        return self.reads.device

    @property
    def attribute_names(self) -> list[str]:
        return self.reads.attribute_names

    @property
    def attribute_groups(self) -> list[str]:
        return self.reads.attribute_groups

    @property
    def default_gamma(self) -> float:
        return self.reads.default_gamma

    @property
    def per_visitor(self) -> bool:
        return self.classes.per_visitor

    @property
    def can_render(self) -> bool:
        return self.reads.can_render

    @property
    def caveat(self) -> str:
        return self.reads.caveat

    @property
    def backbone_description(self) -> str:
        return self.reads.backbone_description

    def class_space(self) -> ClassSpace:
        """This visitor's current snapshot: the bundle's classes, then theirs."""
        return self.classes.space(self.visitor)

    # ---- read side ---------------------------------------------------------------------------------------

    def predict(self, image: Any, gamma: float | None = None, top_k: int = 5) -> Prediction:
        """Top-k classes of an image (a path, bytes or PIL image); bad images raise ImageError."""
        return self.reads.predict(self.class_space(), image, gamma, top_k)

    def predict_features(
        self,
        features: np.ndarray,
        gamma: float | None = None,
        top_k: int = 5,
        image: Image.Image | None = None,
    ) -> Prediction:
        return self.reads.predict_features(self.class_space(), features, gamma, top_k, image)

    def predict_test_image(self, position: int, gamma: float | None = None, top_k: int = 5) -> Prediction:
        """The answer for a test image of a features-only bundle (``position``: its row in the latent cache,
        as :meth:`test_images` lists it)."""
        return self.reads.predict_test_image(self.class_space(), position, gamma, top_k)

    def test_images(self, class_name: str) -> list[SplitImage]:
        """The test images of one of the bundle's classes (features-only bundles), with the model's
        answers."""
        return self.reads.test_images.of_class(class_name)

    def pick_test_image(self, class_name: str, index: int) -> SplitImage:
        return self.reads.test_images.pick(class_name, index)

    def results(self) -> dict[str, Any]:
        """Per-class test accuracy and top confusions (a bundle from ``acmr bundle --run``)."""
        return self.reads.test_images.results()

    def render_examples(
        self, name: str, count: int = DEFAULT_EXAMPLES, gamma: float | None = None, top_k: int = 5
    ) -> list[RenderedExample]:
        return self.reads.render_examples(self.class_space(), name, count, gamma, top_k)

    def attributes_from_text(self, text: object) -> Reading:
        return self.reads.attributes_from_text(text)

    def attributes_from_images(self, images: Sequence[Any]) -> ImageReadings:
        return self.reads.attributes_from_images(images)

    def catalog(self) -> dict[str, Any]:
        return self.reads.catalog(self.class_space())

    def class_record(self, name: str, kind: str, unit_values: Sequence[float]) -> dict[str, Any]:
        return self.reads.class_record(name, kind, unit_values)

    def class_names(self) -> list[str]:
        return list(self.class_space().names)

    def user_class_names(self) -> list[str]:
        return [item.name for item in self.class_space().user_classes]

    def user_classes(self) -> tuple[UserClass, ...]:
        """This visitor's classes, oldest first (names and values in [0, 1], attribute order)."""
        return self.class_space().user_classes

    def class_values(self, name: str) -> dict[str, float]:
        return self.reads.class_values(self.class_space(), name)

    def near_duplicates(self, name: str) -> list[str]:
        return self.reads.near_duplicates(self.class_space(), name)

    def class_counts(self) -> dict[str, int]:
        return self.reads.class_counts(self.class_space())

    def latent_figure(self, **options: Any) -> go.Figure:
        """The latent-space plot of this visitor's classes; ``options`` as for
        :meth:`ReadSide.latent_figure <acmr_core.serving.read_side.ReadSide.latent_figure>` (classes, kinds,
        query, highlight, draft, photos)."""
        return self.reads.latent_figure(self.class_space(), shared=self.shares_classes, **options)

    def preview_class(
        self, attributes: Mapping[str, object], image_latent: Sequence[float] | None = None
    ) -> DraftPreview:
        """A draft class before it is added (values validated as for :meth:`define_class`): where it lands,
        its nearest classes among this visitor's, and how it compares on the last image's latent."""
        values = validate_values(attributes, self.attribute_names)
        return self.reads.preview(self.class_space(), values, image_latent)

    def alignment(self) -> list[AlignedClass]:
        return self.reads.alignment(self.class_space())[0]

    def alignment_summary(self) -> AlignmentSummary:
        return self.reads.alignment(self.class_space())[1]

    # ---- write side: this visitor's classes --------------------------------------------------------------

    def define_class(self, name: str, attributes: Mapping[str, object]) -> dict[str, Any]:
        """Add a class; it takes part in this visitor's every prediction from the moment this returns.

        In a demo world, a group the class leaves empty is filled in with the world's most common value
        (so it can be drawn); the record's ``assumed`` says which (``{group: value}``, empty if none).
        A class the model cannot tell apart from another is added with a warning that stays with it: the
        record's ``warning`` (``None`` if none) names the other class(es) (:meth:`class_warning_record`).
        """
        values, assumed = self.reads.complete(validate_values(attributes, self.attribute_names))
        stored = self.classes.define(self.visitor, name, dict(zip(self.attribute_names, values, strict=True)))
        return {**self.class_record(stored.name, "user", stored.values), "assumed": assumed,
                "warning": self.class_warning_record(stored.name)}  # fmt: skip

    def class_warning(self, name: str) -> str:
        """The warning a user class was added with (issue 32: the model cannot tell it apart from another
        class), or "" (none, or a bundle class)."""
        return self.class_space().warning(name)

    def class_warning_record(self, name: str) -> dict[str, Any] | None:
        """The API's form of :meth:`class_warning`: ``{"confused_with": [names], "message", "details"}``."""
        verdict = self.class_space().verdict(name)
        return None if verdict is None else verdict.record()

    def define_class_json(self, name: str, attributes_json: str) -> dict[str, Any]:
        """:meth:`define_class` with the attributes as a JSON object (the HTTP API's form)."""
        return self.define_class(name, parse_attributes_json(attributes_json))

    def rename_class(self, old: str, new: str) -> dict[str, Any]:
        renamed = self.classes.rename(self.visitor, old, new)
        return self.class_record(renamed.name, "user", renamed.values)

    def delete_class(self, name: str) -> dict[str, Any]:
        """Delete one of this visitor's classes (the bundle's own classes cannot be deleted)."""
        removed = self.classes.delete(self.visitor, name)
        return self.class_record(removed.name, "user", removed.values)

    def import_classes(self, text: str) -> list[str]:
        """Import an export (all or nothing); the classifier is updated once for the whole file."""
        return [item.name for item in self.classes.import_json(self.visitor, text)]

    def export_classes(self) -> str:
        return self.classes.export_json(self.visitor)
