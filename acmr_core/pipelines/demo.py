"""Building the demo bundle: render the demo world (:mod:`acmr_core.data.demo_world`), extract features with
a seeded random ResNet-101, train ACMR and write the bundle (``acmr build-demo``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from acmr_core.bundle.bundle import Bundle
from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.bundle.familiarity import pixel_histogram
from acmr_core.bundle.format import check_output_dir
from acmr_core.data.demo_world import (
    DEFAULT_RESIDUAL_SCALE,
    GALLERY_SEED,
    RENDER_SIZE,
    SHAPE_CAVEAT,
    TRAIN_SEED,
    DemoWorld,
    FeatureExtractor,
    default_world,
    extract_renders,
)
from acmr_core.defaults import DEFAULT_BUNDLE
from acmr_core.errors import ACMRError
from acmr_core.features.backbone import create_backbone
from acmr_core.pipelines.build import LabelledFeatures, build_bundle

log = logging.getLogger(__name__)

#: Images per seen class that train the demo bundle, and per class that populate its latent-space plot.
#: Chosen on the *validation* split (never on evaluation renders): validation H 56 / 68 / 77 with 40 / 60 /
#: 100 renders per class (DEMO preset of the time), 86.5 / 87.8 with 100 / 160 and the current preset.
DEMO_TRAIN_PER_CLASS = 160
DEMO_PLOT_PER_CLASS = 5
#: The most ACMR epochs of the demo bundle; validation stops training earlier when H stops rising.
DEMO_EPOCHS = 200
QUICK_TRAIN_PER_CLASS = 8
QUICK_PLOT_PER_CLASS = 3
QUICK_EPOCHS = 15
#: Calibration candidates for the demo bundle (validation picks one): 0, 0.1, ..., 3.0.
DEMO_GAMMA_GRID = tuple(round(0.1 * step, 1) for step in range(31))


def build_demo_bundle(
    out_dir: str | Path | None,
    *,
    weights: str = "random",
    model_name: str = "resnet101",
    backbone_seed: int = 0,
    world: DemoWorld | None = None,
    train_per_class: int = DEMO_TRAIN_PER_CLASS,
    plot_per_class: int = DEMO_PLOT_PER_CLASS,
    epochs: int | None = DEMO_EPOCHS,
    device: str = "auto",
    seed: int = 0,
    projection: str = "umap",
    progress: bool = True,
    residual_scale: float = DEFAULT_RESIDUAL_SCALE,
    rendered: tuple[LabelledFeatures, LabelledFeatures] | None = None,
) -> Bundle:
    """Render the demo world, extract features with the backbone, train ACMR, and write the bundle.

    Training renders use :data:`TRAIN_SEED` (seen classes only); the latent-space plot uses
    :data:`GALLERY_SEED` renders of every class; both seeds are recorded so evaluation can refuse them.
    ``rendered``: the ``(training, plot)`` sets of :func:`render_demo_sets` for these settings, already
    extracted (the ablation benchmark trains several models on one extraction).
    """
    if out_dir is not None:
        check_output_dir(out_dir)  # before minutes of rendering
    world = world or default_world()
    if train_per_class < 2 or plot_per_class < 1:
        raise ACMRError(
            "the demo bundle needs >= 2 training images per class and >= 1 plotted image per class"
        )
    backbone = create_backbone(
        weights=weights,
        model_name=model_name,
        device=device,
        seed=backbone_seed,
        residual_scale=residual_scale,
    )
    log.info("demo world: %d classes (%d seen), backbone %s", len(world.classes), world.seen_mask.sum(),
             backbone.identity.describe())  # fmt: skip
    train, plot = rendered or render_demo_sets(world, backbone, train_per_class, plot_per_class, progress)
    catalog = ClassCatalog(
        names=tuple(world.class_names),
        attribute_names=tuple(world.attribute_names),
        attribute_matrix=world.attribute_matrix(),
        seen_mask=world.seen_mask,
        descriptions=tuple(c.description for c in world.classes),
    )
    provenance = {
        "name": DEFAULT_BUNDLE,
        "backbone": {
            "weights": weights,
            "model_name": model_name,
            "seed": backbone_seed,
            "residual_scale": residual_scale,
        },
        "demo_world": {
            "used_seeds": [TRAIN_SEED, GALLERY_SEED],
            "train_seed": TRAIN_SEED,
            "plot_seed": GALLERY_SEED,
            "train_per_class": train_per_class,
            "plot_per_class": plot_per_class,
            "render_size": RENDER_SIZE,
        },
        "caveat": SHAPE_CAVEAT,
    }
    # Validation "unseen" classes keep the zero-shot property, and gamma is chosen on a fine grid: the
    # preset's coarse grid (…, 0.5, 1.0, …) is too coarse for 24 classes.
    val_unseen = world.validation_unseen(seed)
    # The familiarity's pixel measure needs the training images themselves: re-render them (cheap, pure).
    histograms = np.stack(
        [
            pixel_histogram(image)
            for image, _, _ in world.renders(TRAIN_SEED, train_per_class, world.seen_classes)
        ]
    )
    return build_bundle(
        train, catalog, out_dir, identity=backbone.identity, plot_features=plot, preset="DEMO", epochs=epochs,
        val_unseen_classes=val_unseen if val_unseen.size else None,
        train_overrides={"cls_gamma_grid": DEMO_GAMMA_GRID},
        device=device, seed=seed, plot_per_class=plot_per_class, projection=projection, provenance=provenance,
        progress=progress, pixel_histograms=histograms,
    )  # fmt: skip


def render_demo_sets(
    world: DemoWorld,
    backbone: FeatureExtractor,
    train_per_class: int,
    plot_per_class: int,
    progress: bool = True,
) -> tuple[LabelledFeatures, LabelledFeatures]:
    """The training set (:data:`TRAIN_SEED`, seen classes) and the plot set (:data:`GALLERY_SEED`, every
    class) of a demo bundle, rendered and run through ``backbone``."""
    train = LabelledFeatures(
        *extract_renders(
            world, backbone, TRAIN_SEED, train_per_class, world.seen_classes, progress, "training renders"
        )
    )
    plot = LabelledFeatures(
        *extract_renders(world, backbone, GALLERY_SEED, plot_per_class, None, progress, "plot renders")
    )
    return train, plot
