"""`acmr build-demo`: render the demo world, extract features, train ACMR, write the default bundle."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from acmr_core.commands._args import add_device_option, finite_float, non_negative_int, positive_int
from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_BUNDLE
from acmr_core.errors import ACMRError

if TYPE_CHECKING:  # imports torch: kept off the start-up path of acmr --help
    from acmr_core.pipelines.demo_backbone import BackboneTraining

DEFAULT_OUT = CHECKPOINTS_DIR / DEFAULT_BUNDLE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-demo",
        help="rebuild the offline demo-world bundle (rendered images, ResNet-101 features, ACMR)",
        description=(
            "Render the procedural demo world, extract ResNet-101 features, train ACMR + the GZSL "
            "classifier, and write a model bundle. With --weights random (default) everything runs offline."
        ),
    )
    parser.add_argument(
        "--weights", default="random", help="backbone weights: random (default), a timm tag, or a file"
    )
    parser.add_argument("--model", default="resnet101", help="timm architecture (default resnet101)")
    parser.add_argument(
        "--backbone-seed", type=int, default=0, help="seed of random backbone weights (default 0)"
    )
    parser.add_argument(
        "--residual-scale",
        type=float,
        default=None,
        help="random weights only: weight of each residual branch's last BatchNorm (default 0.1; 0 = timm's "
        "zero-init)",
    )
    parser.add_argument(
        "--backbone-steps",
        type=int,
        default=None,
        help="random weights only: steps that train the backbone's learnt part on demo renders before "
        "extraction (default 600; --quick: 3); 0 = no learnt part, the plain seeded backbone. Cached in "
        "$ACMR_CACHE_DIR (default ~/.cache/acmr)",
    )
    _add_backbone_training_options(parser)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"bundle folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--quick", action="store_true", help="few images and a short schedule (a smoke test)")
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        help="training renders per seen class (default 160; --quick: 8)",
    )
    parser.add_argument(
        "--plot-per-class", type=int, default=None, help="plotted renders per class (default 5; --quick: 3)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="at most this many ACMR epochs (default 200; --quick: 15)",
    )
    parser.add_argument(
        "--examples", type=Path, default=None, help="also write example images to this folder"
    )
    add_device_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.set_defaults(handler=run)


def _add_backbone_training_options(parser: argparse.ArgumentParser) -> None:
    """The levers of the learnt part's training (issue 33) and how a long run is carried out."""
    group = parser.add_argument_group("learnt part of the backbone (random weights only)")
    group.add_argument(
        "--trainable",
        default=None,
        help="what the backbone's learnt part is (default batchnorm+stem+layer1; also batchnorm, "
        "batchnorm+stem, batchnorm+stem+layer1+layer2, any batchnorm+PART+... with parts stem, layer1-4 "
        "in order, or all; sets with layer3, layer4 or all are too big for a bundle)",
    )
    group.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="backbone input side in px with a learnt part (default 112)",
    )
    group.add_argument(
        "--backbone-batch", type=positive_int, default=None, help="renders per step (default 32)"
    )
    group.add_argument(
        "--backbone-lr", type=finite_float, default=None, help="peak learning rate (default 3e-3)"
    )
    group.add_argument(
        "--conv-lr-scale",
        type=finite_float,
        default=None,
        help="the convolutions' learning rate as a multiple of --backbone-lr (default 1)",
    )
    group.add_argument(
        "--backbone-optimiser", choices=OPTIMISER_CHOICES, default=None, help="optimiser (default adam)"
    )
    group.add_argument(
        "--warmup-steps", type=non_negative_int, default=None, help="linear warm-up steps (default 0)"
    )
    group.add_argument(
        "--curriculum-steps",
        type=non_negative_int,
        default=None,
        help="shape first: the share of single large plain objects falls from all at step 0 to none at "
        "this step (default 0)",
    )
    group.add_argument(
        "--render-repeats",
        type=positive_int,
        default=None,
        help="steps each rendered batch serves, each under its own flips and quarter turns (1-8, default 1; "
        "for a GPU faster than the renderers)",
    )
    group.add_argument(
        "--render-workers",
        type=non_negative_int,
        default=None,
        help="processes drawing the training renders (default: one per CPU core but one)",
    )
    group.add_argument(
        "--checkpoint-minutes",
        type=finite_float,
        default=5.0,
        help="write a resumable checkpoint this often (default 5); a rerun of a stopped build resumes",
    )
    group.add_argument(
        "--backbone-time-limit",
        type=finite_float,
        default=None,
        help="stop the learnt part's training after this many minutes, with a checkpoint to resume from",
    )


#: ``--backbone-optimiser``'s choices (the pipeline's OPTIMISERS; repeated here to keep --help off torch).
OPTIMISER_CHOICES = ("adam", "adamw", "sgd")
#: Options that only make sense with a learnt part, hence with --weights random.
_TRAINING_OPTIONS = {
    "trainable": "trainable",
    "input_size": "input_size",
    "backbone_batch": "batch_size",
    "backbone_lr": "learning_rate",
    "conv_lr_scale": "conv_lr_scale",
    "backbone_optimiser": "optimiser",
    "warmup_steps": "warmup_steps",
    "curriculum_steps": "curriculum_steps",
    "render_repeats": "repeats",
}


def _chosen(given: int | None, quick: bool, quick_default: int, default: int) -> int:
    if given is not None:
        return int(given)
    return quick_default if quick else default


def _backbone_training(args: argparse.Namespace, quick: bool) -> BackboneTraining | None:
    """The learnt part's training settings, or ``None`` for the plain seeded (or any non-random) backbone."""
    from dataclasses import replace

    from acmr_core.pipelines.demo_backbone import QUICK_STEPS, BackboneTraining

    default = BackboneTraining()
    steps = _chosen(args.backbone_steps, quick, QUICK_STEPS, default.steps)
    if steps < 0:
        raise ACMRError(f"--backbone-steps must be 0 or more, got {steps}")
    given = {field: getattr(args, option) for option, field in _TRAINING_OPTIONS.items()}
    given = {field: value for field, value in given.items() if value is not None}
    if (args.backbone_steps or given) and args.weights != "random":
        raise ACMRError(
            "--backbone-steps, --trainable and the other learnt-part options need --weights random"
        )
    if steps == 0 or args.weights != "random":
        return None
    quick_sizes = {"batch_size": 8, "input_size": 64} if quick else {}
    return replace(default, **{"steps": steps, **quick_sizes, **given})


def _training_run(args: argparse.Namespace):  # -> TrainingRun (imports torch)
    from acmr_core.pipelines.demo_backbone import TrainingRun

    limit = args.backbone_time_limit
    if args.checkpoint_minutes <= 0 or (limit is not None and limit <= 0):
        raise ACMRError("--checkpoint-minutes and --backbone-time-limit must be positive")
    return TrainingRun(
        workers=args.render_workers,
        checkpoint_every_s=60.0 * args.checkpoint_minutes,
        time_limit_s=None if limit is None else 60.0 * limit,
    )


def run(args: argparse.Namespace) -> int:
    # lazy: keeps acmr --help fast (these import torch)
    from acmr_core.data import demo_world
    from acmr_core.pipelines import demo

    quick = bool(args.quick)
    train_per_class = _chosen(
        args.train_per_class, quick, demo.QUICK_TRAIN_PER_CLASS, demo.DEMO_TRAIN_PER_CLASS
    )
    plot_per_class = _chosen(args.plot_per_class, quick, demo.QUICK_PLOT_PER_CLASS, demo.DEMO_PLOT_PER_CLASS)
    epochs = _chosen(args.epochs, quick, demo.QUICK_EPOCHS, demo.DEMO_EPOCHS)
    for option, value, minimum in (
        ("--train-per-class", train_per_class, 2),
        ("--plot-per-class", plot_per_class, 1),
        ("--epochs", epochs, 1),
    ):
        if value < minimum:
            raise ACMRError(f"{option} must be at least {minimum}, got {value}")
    started = time.perf_counter()
    training = _backbone_training(args, quick)
    bundle = demo.build_demo_bundle(
        args.out,
        weights=args.weights,
        model_name=args.model,
        backbone_seed=args.backbone_seed,
        residual_scale=(
            args.residual_scale
            if args.residual_scale is not None
            else (demo_world.DEFAULT_RESIDUAL_SCALE if args.weights == "random" else 0.0)
        ),
        train_per_class=train_per_class,
        plot_per_class=plot_per_class,
        calibration_per_class=demo.QUICK_CALIBRATION_PER_CLASS if quick else demo.CALIBRATION_PER_CLASS,
        epochs=epochs,
        device=args.device,
        seed=args.seed,
        backbone_training=training,
        backbone_run=_training_run(args),
    )
    if args.examples is not None:
        written = demo_world.write_examples(args.examples)
        print(f"wrote {len(written)} example images to {args.examples}")
    selection = bundle.trained.selection
    print(
        f"demo bundle written to {args.out} in {time.perf_counter() - started:.0f} s "
        f"({len(bundle.catalog.names)} classes, {int(bundle.catalog.seen_mask.sum())} seen; "
        f"validation H {selection.get('val_H', float('nan')):.1f}, gamma {bundle.gamma:g}); "
        f"score it with: acmr evaluate --bundle {args.out}"
    )
    return 0
