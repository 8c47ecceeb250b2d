"""Building a bundle: train ACMR + the GZSL classifier on labelled features and assemble the bundle around
the trained model (latent cache, 2-D map, familiarity statistics)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acmr_core.bundle.bundle import Bundle, LatentCache
from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.bundle.familiarity import fit_familiarity
from acmr_core.bundle.format import check_output_dir, save_bundle
from acmr_core.defaults import DEFAULT_PLOT_PER_CLASS
from acmr_core.errors import BundleError
from acmr_core.features.backbone import BackboneIdentity
from acmr_core.features.extract import FeatureSet
from acmr_core.fileio import jsonable
from acmr_core.model.config import TrainConfig, make_configs
from acmr_core.model.predictor import TrainedModel
from acmr_core.runtime import resolve_device
from acmr_core.training.fit import scale_epochs
from acmr_core.training.protocol import train_gzsl
from acmr_core.viz.latent_space import fit_projection

log = logging.getLogger(__name__)


@dataclass
class LabelledFeatures:
    """Raw backbone features of images (training, plotted or evaluation ones) with class indices into a
    catalog."""

    features: np.ndarray  # (N, D) float32, raw (unscaled)
    labels: np.ndarray  # (N,) int64 catalog class indices
    image_ids: tuple[str, ...] = ()


def build_bundle(
    features: FeatureSet | LabelledFeatures,
    catalog: ClassCatalog,
    out_dir: str | Path | None,
    *,
    identity: BackboneIdentity | None = None,
    plot_features: FeatureSet | LabelledFeatures | None = None,
    preset: str = "DEMO",
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    plot_per_class: int = DEFAULT_PLOT_PER_CLASS,
    projection: str = "umap",
    val_unseen_classes: Sequence[int] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    pixel_histograms: np.ndarray | None = None,
    learnt_backbone: Path | None = None,
) -> Bundle:
    """Train ACMR + GZSL classifier on ``features`` and assemble (and, with ``out_dir``, save) a bundle.

    ``features``: an :class:`acmr_core.features.extract.FeatureSet` (labels matched to catalog classes by
    name) or :class:`LabelledFeatures`. Only images of *seen* classes train the model; images of unseen
    classes, if present, only appear in the latent-space plot. ``plot_features`` (same types) chooses the
    plotted images instead (e.g. renders never used in training). ``identity`` defaults to the features'
    backbone identity. ``projection``: ``"umap"`` (the latent-space map) or ``"pca"`` (a fast stand-in for
    smoke tests). ``val_unseen_classes``: seen classes that play "unseen" in the validation split that picks
    the classifier epochs and calibration gamma (default: a seeded random choice). ``train_overrides``:
    TrainConfig fields to change (e.g. ``cls_gamma_grid``). ``pixel_histograms``:
    :func:`acmr_core.bundle.familiarity.pixel_histogram` of the training images, where they are at hand, for
    the familiarity's pixel measure.
    """
    if out_dir is not None:
        check_output_dir(out_dir)  # fail before training, not after
    training = as_labelled_features(features, catalog)
    identity = identity if identity is not None else getattr(features, "identity", None)
    if identity is None:
        raise BundleError("the features carry no backbone identity; extract them with 'acmr extract'")
    if training.features.shape[1] != identity.feature_dim:
        raise BundleError(
            f"features are {training.features.shape[1]}-d but the backbone gives {identity.feature_dim}-d"
        )
    seen_rows = np.flatnonzero(catalog.seen_mask[training.labels])
    missing = np.setdiff1d(catalog.seen_classes, training.labels[seen_rows])
    if missing.size:
        raise BundleError(f"no training images for seen class {catalog.names[int(missing[0])]!r}")
    torch_device = resolve_device(device)
    arch, train = make_configs(
        preset,
        feature_dim=training.features.shape[1],
        attribute_dim=len(catalog.attribute_names),
        num_classes=catalog.num_classes,
    )
    if epochs is not None:
        train = scale_epochs(train, epochs)
    if train_overrides:
        train = TrainConfig.from_dict({**train.to_dict(), **dict(train_overrides)})
    validation: dict[str, Any] = {}
    if val_unseen_classes is not None:
        val_unseen = np.unique(np.asarray(val_unseen_classes, dtype=np.int64))
        subset = np.isin(val_unseen, catalog.seen_classes).all()
        if not subset or val_unseen.size >= catalog.seen_classes.size:
            raise BundleError("validation 'unseen' classes must be some (not all) of the seen classes")
        validation = {
            "val_seen_classes": np.setdiff1d(catalog.seen_classes, val_unseen),
            "val_unseen_classes": val_unseen,
        }
    trained = train_gzsl(
        training.features[seen_rows], training.labels[seen_rows], catalog.attribute_matrix,
        catalog.seen_classes, catalog.unseen_classes, arch=arch, train=train, device=torch_device, seed=seed,
        selection="validation", class_names=list(catalog.names), progress=progress, **validation,
    )  # fmt: skip

    # Latent cache: plotted images (by default a sample of every class's images), semantic latents, UMAP map.
    plot = as_labelled_features(plot_features, catalog) if plot_features is not None else training
    plot_rows = sample_per_class(plot.labels, plot_per_class, seed)
    ids = plot.image_ids or tuple(f"image-{i}" for i in range(plot.labels.size))
    plot_ids = tuple(ids[i] for i in plot_rows)
    record = {
        "projection": projection,
        "builder": "acmr_core.pipelines.build.build_bundle",
        "preset": preset,
        "seed": seed,
        **dict(provenance or {}),
    }
    bundle = assemble_bundle(
        trained,
        catalog,
        identity,
        training=LabelledFeatures(training.features[seen_rows], training.labels[seen_rows], ()),
        plotted=LabelledFeatures(plot.features[plot_rows], plot.labels[plot_rows], plot_ids),
        projection=projection,
        seed=seed,
        provenance=record,
        pixel_histograms=pixel_histograms,
    )
    bundle.learnt_backbone = learnt_backbone  # the backbone's learnt part travels inside the bundle
    if out_dir is not None:
        save_bundle(bundle, out_dir)
    return bundle


def assemble_bundle(
    trained: TrainedModel,
    catalog: ClassCatalog,
    identity: BackboneIdentity,
    *,
    training: LabelledFeatures,
    plotted: LabelledFeatures,
    projection: str = "umap",
    seed: int = 0,
    provenance: Mapping[str, Any] | None = None,
    pixel_histograms: np.ndarray | None = None,
) -> Bundle:
    """A bundle around an already trained model: computes its latent cache and fits the 2-D map.

    ``training``: the (seen-class) images the model was trained on; their posterior statistics let the app
    re-fit the GZSL classifier without the features. ``plotted``: the images shown in the latent-space plot.
    The familiarity statistics are fitted on the training features, their threshold calibrated on a held-out
    share of them (:func:`acmr_core.bundle.familiarity.fit_familiarity`; ``pixel_histograms`` of the
    training images add its pixel measure where the images are at hand). Used by :func:`build_bundle` and
    by the bootstrap, which bundles the model it trained and evaluated.
    """
    device = trained.device
    with torch.no_grad():
        scaled = torch.from_numpy(trained.scaler.transform(training.features)).to(device)
        train_mu, train_logvar = (t.cpu().numpy() for t in trained.model.encode_visual(scaled))
        semantic = trained.model.semantic_latent(torch.from_numpy(catalog.attribute_matrix).to(device))
        semantic = semantic.cpu().numpy()
    visual = trained.latents(plotted.features).cpu().numpy()
    fitted, visual_xy, semantic_xy = fit_projection(visual, semantic, method=projection, seed=seed)
    latent = LatentCache(
        visual=visual,
        visual_labels=plotted.labels,
        image_ids=tuple(plotted.image_ids),
        visual_xy=visual_xy,
        semantic=semantic,
        semantic_xy=semantic_xy,
        reference=fitted.reference_latents,
        reference_xy=fitted.reference_xy,
        train_mu=train_mu,
        train_logvar=train_logvar,
        train_labels=training.labels,
        neighbours=fitted.neighbours,
    )
    record = {
        "training_images": int(training.labels.size),
        "plotted_images": int(plotted.labels.size),
        "selection": trained.selection,
        "gamma": trained.gamma,
        **dict(provenance or {}),
    }
    provenance_record = jsonable(record)
    return Bundle(
        identity=identity, catalog=catalog, trained=trained, latent=latent, provenance=provenance_record,
        familiarity=fit_familiarity(training.features, seed=seed, pixel_histograms=pixel_histograms),
    )  # fmt: skip


def as_labelled_features(features: FeatureSet | LabelledFeatures, catalog: ClassCatalog) -> LabelledFeatures:
    """:class:`LabelledFeatures` from LabelledFeatures or an extract ``FeatureSet`` (class names → catalog
    rows)."""
    if isinstance(features, LabelledFeatures):
        labels = np.asarray(features.labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= catalog.num_classes):
            raise BundleError(f"labels must be class indices in 0..{catalog.num_classes - 1}")
        return LabelledFeatures(np.asarray(features.features, np.float32), labels, tuple(features.image_ids))
    array = np.asarray(getattr(features, "features", None), dtype=np.float32)
    class_names = getattr(features, "class_names", None)
    raw_labels = getattr(features, "labels", None)
    if array.ndim != 2 or raw_labels is None or class_names is None:
        raise BundleError("features must be a FeatureSet with features, labels and class names")
    lookup = {n.casefold(): i for i, n in enumerate(catalog.names)}
    mapping = []
    for name in class_names:
        if str(name).casefold() not in lookup:
            raise BundleError(f"features have class {name!r} which the class metadata does not define")
        mapping.append(lookup[str(name).casefold()])
    raw = np.asarray(raw_labels, dtype=np.int64)
    labelled = np.flatnonzero(raw >= 0)  # extract marks images outside any class folder with -1
    if labelled.size < raw.size:
        log.warning("ignoring %d unlabelled images (not in a class folder)", raw.size - labelled.size)
    labels = np.asarray(mapping, dtype=np.int64)[raw[labelled]]
    paths = list(getattr(features, "image_paths", None) or ())
    ids = tuple(str(paths[i]) for i in labelled) if len(paths) == raw.size else ()
    return LabelledFeatures(array[labelled], labels, ids)


def sample_per_class(
    labels: np.ndarray, per_class: int, seed: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Sorted indices of at most ``per_class`` seeded random rows per class (among ``rows``, default all)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(labels.size) if rows is None else np.asarray(rows)
    picked = [rng.permutation(rows[labels[rows] == c])[:per_class] for c in np.unique(labels[rows])]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def backbone_spec_from_identity(
    identity: BackboneIdentity, weights: str | None = None, seed: int | None = None
) -> dict[str, Any]:
    """``create_backbone`` arguments for a bundle's provenance, inferred from a backbone identity's source.

    ``random(seed=N[, residual_scale=R])`` → random weights with seed N (and residual scale R);
    ``hub:timm/<arch>.<tag>`` → that timm tag. A local
    weights file cannot be inferred (only its name is recorded): pass ``weights`` (its path) explicitly.
    """
    source = str(identity.weight_source)
    spec: dict[str, Any] = {"model_name": identity.model_name}
    if weights is not None:
        spec["weights"] = weights
    elif "+learnt:" in source:  # seeded weights plus a learnt file: only the file's path can recreate them
        raise BundleError(
            f"cannot tell how to recreate backbone '{identity.describe()}' at serving time; pass --weights "
            "with the learnt-parameters file used for extraction"
        )
    elif source.startswith("random"):
        spec["weights"] = "random"
    elif source.startswith("hub:"):
        spec["weights"] = source.split("/", 1)[-1]
    else:
        raise BundleError(
            f"cannot tell how to recreate backbone '{identity.describe()}' at serving time; pass --weights "
            "with the weights file used for extraction"
        )
    random_source = re.fullmatch(r"random\(seed=(\d+)(?:, residual_scale=([^)]+))?\)", source)
    if seed is not None:
        spec["seed"] = int(seed)
    elif random_source:
        spec["seed"] = int(random_source.group(1))
    if random_source and random_source.group(2):
        spec["residual_scale"] = float(random_source.group(2))
    return spec
