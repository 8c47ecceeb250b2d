"""`acmr predict`: top-k classes of images under a model bundle, with seen / unseen flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from acmr_core.commands._args import add_bundle_option, add_device_option, bundle_folder, finite_float
from acmr_core.errors import ACMRError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a model bundle (top-k, seen/unseen)",
        description=(
            "Classify images with a model bundle: prints the top-k classes, marked seen or unseen, and flags "
            "images unlike anything the bundle was trained on (familiarity below its threshold)."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    add_bundle_option(parser)
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to show (default 5)")
    parser.add_argument(
        "--gamma", type=finite_float, default=None, help="seen-class calibration (default: the bundle's)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_device_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps acmr --help fast (these import torch)
    from acmr_core.bundle.familiarity import UNFAMILIAR_NOTICE
    from acmr_core.bundle.format import load_bundle
    from acmr_core.fileio import json_text
    from acmr_core.model.gzsl import check_gamma
    from acmr_core.pipelines.predict import predict_images

    if args.top_k < 1:
        raise ACMRError(f"--top-k must be at least 1, got {args.top_k}")
    if args.gamma is not None:
        check_gamma(args.gamma)  # before the bundle and the backbone load: e.g. 1e308 scores NaN
    bundle = load_bundle(bundle_folder(args.bundle), device=args.device)
    results = predict_images(bundle, args.images, top_k=args.top_k, gamma=args.gamma, device=args.device)
    if args.json:
        print(json_text(results), end="")  # strict JSON: never a bare NaN
        return 0
    width = max(len(entry["class"]) for result in results for entry in result["top_k"])
    for result in results:
        print(result["image"])
        for rank, entry in enumerate(result["top_k"], start=1):
            print(f"  {rank}. {entry['class']:<{width}}  {entry['probability']:6.1%}  {entry['kind']}")
        if result["unfamiliar"]:
            print(f"  ! familiarity {result['familiarity']:.2f}: {UNFAMILIAR_NOTICE}")
    return 0
