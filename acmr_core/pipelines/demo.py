"""Building the demo bundle: render the demo world (:mod:`acmr_core.data.demo_world`), extract features with
a seeded random ResNet-101, train ACMR and write the bundle (``acmr build-demo``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from acmr_core.bundle.bundle import LEARNT_BACKBONE_PART, Bundle
from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.bundle.familiarity import pixel_histogram
from acmr_core.bundle.format import check_output_dir, save_bundle
from acmr_core.data.demo_world import (
    DEFAULT_RESIDUAL_SCALE,
    GALLERY_SEED,
    SHAPE_CAVEAT,
    TRAIN_SEED,
    DemoWorld,
    DemoWorldRecord,
    FeatureExtractor,
    default_world,
    extract_renders,
)
from acmr_core.defaults import DEFAULT_BUNDLE
from acmr_core.errors import ACMRError
from acmr_core.features.backbone import create_backbone
from acmr_core.model.config import find_preset
from acmr_core.pipelines.build import LabelledFeatures, build_bundle
from acmr_core.pipelines.calibrate import (
    CALIBRATION_PER_CLASS,
    CALIBRATION_SEED,
    calibration_renders,
    fit_bundle_temperature,
)
from acmr_core.pipelines.demo_backbone import BackboneTraining, TrainingRun, learnt_backbone

log = logging.getLogger(__name__)

#: Images per seen class that train the demo bundle, and per class that populate its latent-space plot.
#: Chosen on the *validation* split (never on evaluation renders): validation H 56 / 68 / 77 with 40 / 60 /
#: 100 renders per class (DEMO preset of the time), 86.5 / 87.8 with 100 / 160 and the current preset.
DEMO_TRAIN_PER_CLASS = 160
DEMO_PLOT_PER_CLASS = 5
#: The preset the demo bundle trains with: its schedule (at most 200 ACMR epochs, validation stopping earlier)
#: and its fine calibration grid are written there and nowhere else (acmr_core/model/presets/demo-world.json).
DEMO_PRESET = "DEMO-WORLD"
#: The most ACMR epochs of the demo bundle, read from its preset (``acmr build-demo --help`` states it).
DEMO_EPOCHS = find_preset(DEMO_PRESET).train.epochs
QUICK_TRAIN_PER_CLASS = 8
QUICK_PLOT_PER_CLASS = 3
#: Calibration renders per class of a quick build (a full build: calibrate.CALIBRATION_PER_CLASS).
QUICK_CALIBRATION_PER_CLASS = 4
QUICK_EPOCHS = 15


def build_demo_bundle(
    out_dir: str | Path | None,
    *,
    weights: str = "random",
    model_name: str = "resnet101",
    backbone_seed: int = 0,
    world: DemoWorld | None = None,
    train_per_class: int = DEMO_TRAIN_PER_CLASS,
    plot_per_class: int = DEMO_PLOT_PER_CLASS,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    projection: str = "umap",
    progress: bool = True,
    residual_scale: float = DEFAULT_RESIDUAL_SCALE,
    rendered: tuple[LabelledFeatures, LabelledFeatures] | None = None,
    backbone_training: BackboneTraining | None = None,
    calibration_per_class: int = CALIBRATION_PER_CLASS,
    backbone_run: TrainingRun | None = None,
) -> Bundle:
    """Render the demo world, extract features with the backbone, train ACMR, and write the bundle.

    Training renders use :data:`TRAIN_SEED` (seen classes only); the latent-space plot uses
    :data:`GALLERY_SEED` renders of every class; both seeds are recorded so evaluation can refuse them.
    ``rendered``: the ``(training, plot)`` sets of :func:`render_demo_sets` for these settings, already
    extracted (the ablation benchmark trains several models on one extraction). ``epochs``: the most ACMR
    epochs, warm-ups scaled in proportion (default: the :data:`DEMO_PRESET` schedule's, :data:`DEMO_EPOCHS`).
    ``backbone_training`` (random weights only): first train (or take from the cache) the learnt part of the
    seeded backbone (:mod:`acmr_core.pipelines.demo_backbone`); it is shipped inside the bundle.
    ``calibration_per_class``: fresh renders per class (render seed
    :data:`acmr_core.pipelines.calibrate.CALIBRATION_SEED`) that fit the probabilities' temperature (0: keep
    the validation split's).
    ``backbone_run``: how that training is carried out (render workers, checkpoints, a time limit).
    """
    if out_dir is not None:
        check_output_dir(out_dir)  # before minutes of rendering
    world = world or default_world()
    if train_per_class < 2 or plot_per_class < 1:
        raise ACMRError(
            "the demo bundle needs >= 2 training images per class and >= 1 plotted image per class"
        )
    learnt = None
    recorded: dict[str, object] = {"weights": weights, "model_name": model_name, "seed": backbone_seed,
                                   "residual_scale": residual_scale}  # fmt: skip
    if backbone_training is not None:
        if weights != "random":
            raise ACMRError("only seeded random weights (--weights random) can have a learnt part trained")
        learnt = learnt_backbone(backbone_training, world, model_name=model_name, backbone_seed=backbone_seed,
                                 residual_scale=residual_scale, device=device, progress=progress,
                                 run=backbone_run)  # fmt: skip
        weights, residual_scale = str(learnt), 0.0
        recorded = {"weights": LEARNT_BACKBONE_PART, "model_name": model_name}
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
    catalog = ClassCatalog.from_demo_world(world)
    provenance = {
        "name": DEFAULT_BUNDLE,
        "backbone": recorded,
        DemoWorldRecord.KEY: DemoWorldRecord(
            used_seeds=(TRAIN_SEED, GALLERY_SEED),
            train_seed=TRAIN_SEED,
            plot_seed=GALLERY_SEED,
            train_per_class=train_per_class,
            plot_per_class=plot_per_class,
        ).to_provenance(),
        "caveat": SHAPE_CAVEAT,
    }
    # Validation "unseen" classes keep the zero-shot property.
    val_unseen = world.validation_unseen(seed)
    # The familiarity's pixel measure needs the training images themselves: re-render them (cheap, pure).
    histograms = np.stack(
        [
            pixel_histogram(image)
            for image, _, _ in world.renders(TRAIN_SEED, train_per_class, world.seen_classes)
        ]
    )
    bundle = build_bundle(
        train, catalog, None, identity=backbone.identity, plot_features=plot, preset=DEMO_PRESET,
        epochs=epochs, val_unseen_classes=val_unseen if val_unseen.size else None,
        device=device, seed=seed, plot_per_class=plot_per_class, projection=projection, provenance=provenance,
        progress=progress, pixel_histograms=histograms, learnt_backbone=learnt,
    )  # fmt: skip
    if calibration_per_class > 0:
        # The world can show fresh images of every class, its unseen ones too: the probabilities' temperature
        # is fitted on them (the validation split could only soften it), with a seed recorded as used.
        features, labels, record = calibration_renders(
            bundle, backbone, CALIBRATION_SEED, calibration_per_class
        )
        fit_bundle_temperature(bundle, features, labels, record)
        demo = bundle.provenance[DemoWorldRecord.KEY]
        demo["used_seeds"] = sorted({*demo["used_seeds"], CALIBRATION_SEED})
    if out_dir is not None:
        save_bundle(bundle, out_dir)
    return bundle


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
