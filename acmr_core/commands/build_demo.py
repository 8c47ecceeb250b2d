"""`acmr build-demo`: render the demo world, extract features, train ACMR, write the default bundle."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from acmr_core.commands._args import add_device_option
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
    parser.add_argument(
        "--trainable",
        default=None,
        help="what the backbone's learnt part is (default batchnorm+stem+layer1; also batchnorm, "
        "batchnorm+stem, batchnorm+stem+layer1+layer2)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="backbone input side in px with a learnt part (default 112)",
    )
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


def _chosen(given: int | None, quick: bool, quick_default: int, default: int) -> int:
    if given is not None:
        return int(given)
    return quick_default if quick else default


def _backbone_training(args: argparse.Namespace, quick: bool) -> BackboneTraining | None:
    """The learnt part's training settings, or ``None`` for the plain seeded (or any non-random) backbone."""
    from acmr_core.pipelines.demo_backbone import QUICK_STEPS, BackboneTraining

    default = BackboneTraining()
    steps = _chosen(args.backbone_steps, quick, QUICK_STEPS, default.steps)
    if steps < 0:
        raise ACMRError(f"--backbone-steps must be 0 or more, got {steps}")
    if (args.backbone_steps or args.trainable or args.input_size) and args.weights != "random":
        raise ACMRError("--backbone-steps, --trainable and --input-size need --weights random")
    if steps == 0 or args.weights != "random":
        return None
    return BackboneTraining(
        trainable=args.trainable or default.trainable,
        steps=steps,
        batch_size=8 if quick else default.batch_size,
        input_size=args.input_size or (64 if quick else default.input_size),
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
