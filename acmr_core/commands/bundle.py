"""`acmr bundle`: train ACMR on extracted features + class metadata and write a model bundle; or (``--run``)
bundle a model that ``acmr train`` trained on precomputed xlsa17 features, with its test images and
results."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from acmr_core.commands._args import add_device_option
from acmr_core.defaults import DEFAULT_PLOT_PER_CLASS
from acmr_core.errors import ACMRError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bundle",
        help="build a model bundle from extracted features and class metadata (trains ACMR), or from a "
        "training run (--run)",
        description=(
            "Train ACMR + the GZSL classifier on features written by 'acmr extract' (class subfolders = "
            "class names) and a class-metadata JSON file (see docs/bundles.md); write a model bundle. "
            "Or, with --run, bundle a model 'acmr train' trained on xlsa17 features (res101.mat): every test "
            "image on the map and the per-class test results; it reads features, not images."
        ),
    )
    parser.add_argument("--features", type=Path, help="training features from 'acmr extract'")
    parser.add_argument("--classes", type=Path, help="class-metadata JSON (names, attributes, seen)")
    parser.add_argument(
        "--run", type=Path, help="an 'acmr train --out' folder to bundle instead (no training)"
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        help="with --run: the xlsa17 folder it was trained on (default: the one its metrics.json records)",
    )
    parser.add_argument(
        "--projection",
        choices=("umap", "pca"),
        default="umap",
        help="the 2-D map: umap (default) or pca (a quick stand-in for smoke tests)",
    )
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument(
        "--plot-features", type=Path, default=None, help="features of images to show in the latent plot"
    )
    parser.add_argument("--preset", default="DEMO", help="ACMR preset: DEMO (default), CUB, SUN, AWA1, AWA2")
    parser.add_argument("--epochs", type=int, default=None, help="ACMR epochs (default: the preset's)")
    parser.add_argument(
        "--weights",
        default=None,
        help="backbone weights to use when serving (random / timm tag / file); default: from the features",
    )
    parser.add_argument("--backbone-seed", type=int, default=None, help="seed of random backbone weights")
    parser.add_argument(
        "--plot-per-class",
        type=int,
        default=DEFAULT_PLOT_PER_CLASS,
        help=f"plotted images per class (default {DEFAULT_PLOT_PER_CLASS})",
    )
    add_device_option(parser)
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="training seed (default 0); with --run: which seed's model (default: the run's first)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps acmr --help fast (these import torch)
    from acmr_core.bundle.catalog import load_class_metadata
    from acmr_core.features.extract import load_features
    from acmr_core.pipelines.build import backbone_spec_from_identity, build_bundle

    if args.run is not None:
        return run_from_training(args)
    if args.features is None or args.classes is None:
        raise ACMRError(
            "give --features and --classes (to train a bundle), or --run (to bundle a trained model)"
        )
    if args.epochs is not None and args.epochs < 1:
        raise ACMRError(f"--epochs must be at least 1, got {args.epochs}")
    if args.plot_per_class < 1:
        raise ACMRError(f"--plot-per-class must be at least 1, got {args.plot_per_class}")
    catalog = load_class_metadata(args.classes)
    features = load_features(args.features)
    plot = load_features(args.plot_features) if args.plot_features else None
    if plot is not None:
        features.identity.ensure_matches(plot.identity, context=str(args.plot_features))
    spec = backbone_spec_from_identity(features.identity, weights=args.weights, seed=args.backbone_seed)
    started = time.perf_counter()
    bundle = build_bundle(
        features,
        catalog,
        args.out,
        plot_features=plot,
        preset=args.preset,
        epochs=args.epochs,
        device=args.device,
        seed=0 if args.seed is None else args.seed,
        projection=args.projection,
        plot_per_class=args.plot_per_class,
        provenance={
            "name": args.out.name,
            "backbone": spec,
            "features": str(args.features),
            "classes": str(args.classes),
        },
    )
    selection = bundle.trained.selection
    print(
        f"bundle written to {args.out} in {time.perf_counter() - started:.0f} s "
        f"({bundle.catalog.num_classes} classes, {int(bundle.catalog.seen_mask.sum())} seen; "
        f"validation H {selection.get('val_H', float('nan')):.1f}, gamma {bundle.gamma:g})"
    )
    return 0


def run_from_training(args: argparse.Namespace) -> int:
    """``acmr bundle --run``: bundle a model of an ``acmr train`` run (no training)."""
    from acmr_core.pipelines.from_run import bundle_from_run  # lazy: imports torch

    if args.features is not None or args.classes is not None:
        raise ACMRError("--run bundles a trained model: leave out --features and --classes")
    started = time.perf_counter()
    bundle = bundle_from_run(
        args.run, args.out, data_root=args.data_root, seed=args.seed, projection=args.projection,
        device=args.device,
    )  # fmt: skip
    results = bundle.results or {}
    metrics = results.get("metrics", {})
    print(
        f"bundle written to {args.out} in {time.perf_counter() - started:.0f} s "
        f"({bundle.catalog.num_classes} classes, {bundle.latent.visual_labels.size} test images on the map; "
        f"test U {metrics.get('U', float('nan')):.2f} S {metrics.get('S', float('nan')):.2f} "
        f"H {metrics.get('H', float('nan')):.2f}); it reads precomputed features, not images"
    )
    return 0
