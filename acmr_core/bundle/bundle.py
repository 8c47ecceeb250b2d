"""The typed model bundle: a trained ACMR model with its class catalog, backbone identity, latent cache
and familiarity statistics. Every prediction goes through :class:`~acmr_core.model.predictor.TrainedModel`;
the on-disk format is :mod:`acmr_core.bundle.format`, building one is :mod:`acmr_core.pipelines.build`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.bundle.familiarity import Familiarity
from acmr_core.data.xlsa17 import FeatureScaler
from acmr_core.errors import BackboneError, BundleError
from acmr_core.features.backbone import Backbone, BackboneIdentity, create_backbone
from acmr_core.model.gzsl import (
    GZSLClassifier,
    encoded_posterior,
    fit_extra_row,
    logit_offset,
    sample_latent_dataset,
    stored_posterior,
    train_classifier,
    with_rows,
)
from acmr_core.model.network import ACMR
from acmr_core.model.predictor import TrainedModel
from acmr_core.viz.latent_space import ClassAlignment, LatentProjection, alignment_scores

#: Rows of extra classes kept by :meth:`Bundle.fast_classifier` (65 floats each): a delete, or an add next to
#: classes already fitted, trains nothing for them.
EXTRA_ROW_CACHE = 4096
#: The optional bundle part holding the learnt part of a seeded random backbone
#: (acmr_core.features.weights.save_learnt_parameters). Recorded as the backbone ``weights``, this name means
#: "this bundle's own part".
LEARNT_BACKBONE_PART = "backbone.safetensors"
#: What a features-only bundle (``Bundle.features_only``) says of itself, after its name or "this model".
FEATURES_ONLY_NOTICE = "reads precomputed image features (res101.mat), not images"


@dataclass(frozen=True)
class LatentCache:
    """Precomputed latents for the latent-space plot, and the training posteriors for classifier re-fits."""

    visual: np.ndarray  # (N, d) visual latents (mu) of a sample of images
    visual_labels: np.ndarray  # (N,) class index of each
    image_ids: tuple[str, ...]  # (N,) where each image came from
    visual_xy: np.ndarray  # (N, 2)
    semantic: np.ndarray  # (C, d) semantic latents (mu) of every catalog class
    semantic_xy: np.ndarray  # (C, 2)
    reference: np.ndarray  # (R, d) latents the 2-D map was fitted on
    reference_xy: np.ndarray  # (R, 2)
    train_mu: np.ndarray  # (T, d) visual posterior of every training image
    train_logvar: np.ndarray  # (T, d)
    train_labels: np.ndarray  # (T,)
    neighbours: int = 8

    def projection(self) -> LatentProjection:
        return LatentProjection(self.reference, self.reference_xy, self.neighbours)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            name: np.ascontiguousarray(getattr(self, name))
            for name in (
                "visual", "visual_labels", "visual_xy", "semantic", "semantic_xy",
                "reference", "reference_xy", "train_mu", "train_logvar", "train_labels",
            )
        }  # fmt: skip


@dataclass
class Bundle:
    """A loaded (or freshly built) model bundle; ``trained`` holds the ACMR, GZSL classifier, gamma and
    scaler, and scores every prediction."""

    identity: BackboneIdentity
    catalog: ClassCatalog
    trained: TrainedModel
    latent: LatentCache
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    familiarity: Familiarity | None = None  # of the training images
    # A learnt-parameters file that is part of the bundle (saved as its backbone.safetensors); the recorded
    # backbone weights then name that part and ``create_backbone`` loads it.
    learnt_backbone: Path | None = None
    # A bundle of a model trained on precomputed features (``acmr bundle --run``: xlsa17 res101.mat): it has
    # no backbone, reads no images, and its latent cache is the test split's images; ``results`` holds its
    # per-class test results (acmr_core.pipelines.from_run).
    features_only: bool = False
    results: dict[str, Any] | None = None
    _projection: LatentProjection | None = field(default=None, repr=False)
    # The fast update's inputs, built on first use: per seed, the bundle classes' training latents with the
    # bundle classifier's log-sum-exp on them; per (attributes, seed), the fitted row of an extra class.
    _base_latents: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    _extra_rows: OrderedDict[tuple[bytes, int], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=OrderedDict, repr=False
    )

    # --- parts ------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else str(self.provenance.get("name", "bundle"))

    @property
    def model(self) -> ACMR:
        return self.trained.model

    @property
    def classifier(self) -> GZSLClassifier:
        return self.trained.classifier

    @property
    def scaler(self) -> FeatureScaler | None:
        return self.trained.scaler

    @property
    def gamma(self) -> float:
        return float(self.trained.gamma)

    @property
    def device(self) -> torch.device:
        return self.trained.device

    @property
    def caveat(self) -> str:
        """A limitation to show next to predictions (e.g. the demo bundle's weak shape); may be empty."""
        return str(self.provenance.get("caveat", ""))

    @property
    def backbone_spec(self) -> dict[str, Any]:
        """``create_backbone`` arguments that reproduce the bundle's backbone (weights, model_name, seed)."""
        return dict(self.provenance.get("backbone", {}))

    @property
    def projection(self) -> LatentProjection:
        """The 2-D map's projection used to place new points (built once)."""
        if self._projection is None:
            self._projection = self.latent.projection()
        return self._projection

    # --- backbone --------------------------------------------------------------------------------------
    def check_backbone(self, backbone: Backbone | BackboneIdentity) -> None:
        """Raise :class:`BundleError` unless ``backbone`` (or an identity) makes this bundle's features."""
        other = getattr(backbone, "identity", backbone)
        try:
            self.identity.ensure_matches(other, context=f"bundle {self.name}")
        except BackboneError as error:
            raise BundleError(str(error)) from None

    def create_backbone(self, device: str = "auto", **kwargs: Any) -> Backbone:
        """The backbone this bundle was built with (recorded weights), checked against its identity."""
        if self.features_only:
            raise BundleError(f"bundle {self.name} {FEATURES_ONLY_NOTICE}: it has no backbone to create")
        spec = self.backbone_spec
        if "weights" not in spec:
            raise BundleError(
                f"bundle {self.name} does not record how to create its backbone; pass one built with "
                f"the weights "
                f"of {self.identity.describe()}"
            )
        weights = str(spec["weights"])
        if weights == LEARNT_BACKBONE_PART:
            if self.learnt_backbone is None or not self.learnt_backbone.is_file():
                raise BundleError(f"bundle {self.name} names its own backbone part, but has none; re-copy it")
            weights = str(self.learnt_backbone)
        backbone = create_backbone(
            weights=weights,
            model_name=spec.get("model_name", self.identity.model_name),
            seed=int(spec.get("seed", 0)),
            residual_scale=float(spec.get("residual_scale", 0.0)),
            device=device,
            **kwargs,
        )
        self.check_backbone(backbone)
        return backbone

    # --- inference --------------------------------------------------------------------------------------
    def check_features(self, features: Any) -> np.ndarray:
        array = np.asarray(features, dtype=np.float32)
        if array.ndim == 1:
            array = array[None, :]
        expected = self.trained.arch.feature_dim
        if array.ndim != 2 or array.shape[1] != expected:
            raise BundleError(
                f"features have shape {array.shape}; bundle {self.name} expects (N, {expected})"
            )
        return array

    def latents(self, features: Any) -> np.ndarray:
        """Visual latents (posterior mean, deterministic) of raw backbone features ``(N, feature_dim)``."""
        return self.trained.latents(self.check_features(features)).cpu().numpy()

    def scores(self, features: Any, gamma: float | None = None) -> np.ndarray:
        """Calibrated log-probabilities ``(N, C)`` (seen classes penalised by ``gamma``)."""
        return self.trained.scores(self.check_features(features), gamma).cpu().numpy()

    def probabilities(self, features: Any, gamma: float | None = None) -> np.ndarray:
        """Class probabilities ``(N, C)``: softmax of the calibrated scores (they sum to 1 per image)."""
        return self.trained.probabilities(self.check_features(features), gamma)

    def assess_familiarity(self, features: Any, images: Any = None) -> list[tuple[float, bool]]:
        """``(familiarity, unfamiliar)`` of each image: how much it resembles the training images.

        ``images`` (PIL, one per feature row) add the pixel measure where the bundle has one (demo world).
        """
        if self.familiarity is None:
            raise BundleError(f"bundle {self.name} has no familiarity statistics; rebuild it")
        return self.familiarity.assess(self.check_features(features), images)

    def top_k(self, features: Any, k: int = 5, gamma: float | None = None) -> list[list[tuple[int, float]]]:
        """Per image, the ``k`` most probable ``(class index, probability)``."""
        return self.trained.top_k(self.check_features(features), k, gamma)

    @torch.no_grad()
    def semantic_latents(self, attributes: Any) -> np.ndarray:
        """Semantic latents of attribute vectors ``(M, A)`` (e.g. a user-defined class)."""
        array = np.asarray(attributes, dtype=np.float32)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != len(self.catalog.attribute_names):
            raise BundleError(
                f"attributes have shape {array.shape}; expected (M, {len(self.catalog.attribute_names)})"
            )
        self.model.eval()
        return self.model.semantic_latent(torch.from_numpy(array).to(self.device)).cpu().numpy()

    @torch.no_grad()
    def decode_attributes(self, latents: Any) -> np.ndarray:
        """The semantic decoder's reading of latents ``(M, d)``: attributes ``(M, A)``, catalog scale."""
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32), device=self.device)
        self.model.eval()
        return self.model.decode_semantic(z.reshape(-1, z.shape[-1])).cpu().numpy()

    def place(self, latents: Any) -> np.ndarray:
        """2-D positions of new latents in the bundle's latent-space map (k-NN interpolation, no UMAP)."""
        return self.projection.place(np.asarray(latents, dtype=np.float32))

    def alignment(self) -> list[ClassAlignment]:
        """Per-class alignment scores (see :func:`acmr_core.viz.latent_space.alignment_scores`)."""
        return alignment_scores(self.latent.visual, self.latent.visual_labels, self.latent.semantic)

    def _check_class_set(self, class_attributes: Any, seen_mask: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(attributes (C', A), mask (C',))`` of a class set to fit a classifier over, or a BundleError."""
        attributes = np.asarray(class_attributes, dtype=np.float32)
        mask = np.asarray(seen_mask, dtype=bool)
        if attributes.ndim != 2 or attributes.shape[1] != len(self.catalog.attribute_names):
            raise BundleError(
                f"attributes have shape {attributes.shape}; expected (C, {len(self.catalog.attribute_names)})"
            )
        if mask.shape != (attributes.shape[0],):
            raise BundleError(f"seen mask has shape {mask.shape}; expected ({attributes.shape[0]},)")
        if not np.array_equal(np.flatnonzero(mask), self.catalog.seen_classes):
            raise BundleError("the seen classes of a re-fitted classifier must be the bundle's seen classes")
        return attributes, mask

    def _training_latents(
        self,
        attributes: np.ndarray,
        others: np.ndarray,
        seed: int,
        unseen_samples: int | None = None,
        seen_samples: int | None = None,
        with_seen: bool = True,
        noise_per_class: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's training latents: the bundle's seen classes from the stored training posteriors
        (unless not ``with_seen``), the classes ``others`` (rows of ``attributes``) from their attributes —
        the recipe of training (:func:`acmr_core.model.gzsl.sample_latent_dataset`), without the features.
        ``noise_per_class``: each other class's noise is drawn on its own, so a class added after it (user
        classes come last) leaves its latents as they were."""
        train = self.trained.train
        device = self.device
        per_seen = seen_samples or train.cls_seen_samples
        per_unseen = unseen_samples or train.cls_unseen_samples
        labels = self.latent.train_labels if with_seen else np.zeros(0, dtype=np.int64)
        return sample_latent_dataset(
            self.model,
            stored_posterior(
                torch.from_numpy(self.latent.train_mu).to(device),
                torch.from_numpy(self.latent.train_logvar).to(device),
            ),
            labels,
            encoded_posterior(self.model.encode_semantic, torch.from_numpy(attributes).to(device)),
            others,
            seen_samples=per_seen,
            unseen_samples=per_unseen,
            seed=seed,
            device=device,
            seen_classes=self.catalog.seen_classes if with_seen else np.zeros(0, dtype=np.int64),
            # Noise drawn per seen class, then for the other classes in one draw (the fast update's rows, as
            # issue 24 measured them) or per class (``noise_per_class``, the full re-fit): one draw for all
            # made every class's latents depend on how many classes there were, so adding an unrelated class
            # moved every row of the re-fit and flipped the verdict of a class on the edge (issue 32).
            seen_noise_chunk=per_seen,
            unseen_noise_chunk=per_unseen if noise_per_class else max(others.size * per_unseen, 1),
        )

    def refit_classifier(
        self,
        class_attributes: Any,
        seen_mask: Any,
        *,
        unseen_samples: int | None = None,
        seen_samples: int | None = None,
        seed: int = 0,
    ) -> GZSLClassifier:
        """A new GZSL classifier over ``class_attributes`` ``(C', A)`` (e.g. the catalog plus user classes).

        Seen classes (``seen_mask``; they must be the bundle's seen classes, in the same rows) are represented
        by latents sampled from the stored training posteriors; every other class by latents sampled from its
        attributes — the same recipe (:func:`acmr_core.model.gzsl.sample_latent_dataset`) as training, without
        the training features. Seconds on a CPU with many classes (every row is re-trained); an edit of the
        user classes uses :meth:`fast_classifier`.
        """
        attributes, mask = self._check_class_set(class_attributes, seen_mask)
        z, y = self._training_latents(
            attributes, np.flatnonzero(~mask), seed, unseen_samples=unseen_samples, seen_samples=seen_samples,
            noise_per_class=True,
        )  # fmt: skip
        train = self.trained.train
        return train_classifier(
            z, y, attributes.shape[0], epochs=max(int(self.trained.classifier_epochs), 1), seed=seed,
            **train.classifier_optimizer(),
        )  # fmt: skip

    def fast_classifier(self, class_attributes: Any, seen_mask: Any, *, seed: int = 0) -> GZSLClassifier:
        """The bundle's classifier with one more row per extra class (rows past the catalog's), issue 24.

        The catalog's rows are the bundle's trained ones, unchanged; each extra class's row is fitted on its
        own against them (:meth:`extra_class_row`), so the result is a pure function of the class set — the
        same whatever the order of adds and deletes before — and a delete trains nothing. Same arguments as
        :meth:`refit_classifier`, whose classes it gives within a point of fresh-render H and
        render-your-class top-1 (docs/benchmarks/app.md).
        """
        attributes, _ = self._check_class_set(class_attributes, seen_mask)
        n_bundle = self.catalog.num_classes
        if attributes.shape[0] < n_bundle:
            raise BundleError(
                f"expected the bundle's {n_bundle} classes first, got {attributes.shape[0]} rows"
            )
        extra = [self.extra_class_row(row, seed) for row in attributes[n_bundle:]]
        if not extra:
            return self.classifier
        weight = torch.stack([w for w, _ in extra])
        bias = torch.stack([b for _, b in extra])
        return with_rows(self.classifier, weight, bias)

    def extra_class_row(self, attributes: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of an extra (unseen) class's row over the bundle classifier; cached.

        Trained on the class's attribute latents (as many as a re-fit samples per unseen class) against the
        bundle classes' training latents (:func:`acmr_core.model.gzsl.fit_extra_row`).
        """
        row = np.ascontiguousarray(attributes, dtype=np.float32).reshape(1, -1)
        key = (row.tobytes(), int(seed))
        cached = self._extra_rows.get(key)
        if cached is not None:
            self._extra_rows.move_to_end(key)
            return cached
        base_z, base_offset = self._bundle_latents(seed)
        own_z, _ = self._training_latents(row, np.zeros(1, dtype=np.int64), seed, with_seen=False)
        z = torch.cat((base_z, own_z))
        offset = torch.cat((base_offset, logit_offset(self.classifier, own_z)))
        target = torch.cat((torch.zeros(base_z.shape[0]), torch.ones(own_z.shape[0]))).to(z.device)
        fitted = fit_extra_row(z, offset, target, beta1=self.trained.train.classifier_optimizer()["beta1"])
        self._extra_rows[key] = fitted
        while len(self._extra_rows) > EXTRA_ROW_CACHE:
            self._extra_rows.popitem(last=False)
        return fitted

    def prepare_fast_update(self, seed: int = 0) -> None:
        """Do now what the first :meth:`extra_class_row` would: sample the bundle classes' latents and run the
        optimizer once (its first use imports torch code: seconds on a busy CPU)."""
        z, offset = self._bundle_latents(seed)
        fit_extra_row(z[:1], offset[:1], torch.zeros(1, device=z.device), steps=1)

    def _bundle_latents(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The bundle classes' training latents (the re-fit's recipe), and the classifier's log-sum-exp on
        them."""
        cached = self._base_latents.get(int(seed))
        if cached is None:
            attributes = np.asarray(self.catalog.attribute_matrix, dtype=np.float32)
            z, _ = self._training_latents(attributes, self.catalog.unseen_classes, seed)
            cached = (z, logit_offset(self.classifier, z))
            self._base_latents[int(seed)] = cached
        return cached
