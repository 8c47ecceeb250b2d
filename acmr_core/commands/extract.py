"""`acmr extract`: images (a class-folder tree or a list file) → a features file for `acmr bundle`.

Writes one ``.safetensors`` file (features, labels, relative image paths, class names, backbone identity and
the list of skipped images) and, with ``--res101-mat``, the same features in the xlsa17 ``res101.mat``
layout. Unreadable images are skipped with a warning each and counted in the printed summary.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from acmr_core.commands._args import non_negative_int, positive_int
from acmr_core.errors import ACMRError


def _default_workers() -> int:
    # Decoding runs beside the forward pass; leave the main process one core.
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract backbone features from an image folder or list file",
        description="Extract 2048-d timm ResNet-101 features from images. --images is a folder whose "
        "sub-folders are the classes, or a text file of 'relative/path [label]' lines (paths relative to "
        "the list file, or to --root).",
    )
    parser.add_argument("--images", required=True, type=Path, help="image folder or list file")
    parser.add_argument(
        "--weights",
        default="tv_in1k",
        help="timm tag (default tv_in1k: torchvision's ImageNet-1k ResNet-101), a .safetensors/.pth file, "
        "or 'random' (seeded, offline)",
    )
    parser.add_argument("--out", required=True, type=Path, help="features file to write (.safetensors)")
    parser.add_argument("--res101-mat", type=Path, default=None, help="also write an xlsa17 res101.mat here")
    parser.add_argument("--model", default="resnet101", help="timm architecture (default resnet101)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)"
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=_default_workers(),
        help=f"image-decoding worker processes (default {_default_workers()})",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads for the forward pass (default: torch's; 1 is faster on a busy machine)",
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="folder the list file's paths are relative to"
    )
    parser.add_argument(
        "--max-pixels", type=positive_int, default=None, help="refuse larger images (default 64 MP)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from acmr_core.backbone import create_backbone
    from acmr_core.extract import extract_features, find_images, save_features, write_res101_mat
    from acmr_core.images import DEFAULT_MAX_PIXELS

    if args.out.suffix != ".safetensors":
        raise ACMRError(f"--out {args.out}: the features file must end in .safetensors")
    if args.res101_mat is not None and args.res101_mat.suffix != ".mat":
        raise ACMRError(f"--res101-mat {args.res101_mat}: the file must end in .mat")
    images = find_images(args.images, args.root)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backbone = create_backbone(
        args.weights, model_name=args.model, device=args.device, seed=args.seed, batch_size=args.batch_size
    )
    feature_set = extract_features(
        backbone,
        images,
        workers=args.workers,
        progress=not args.no_progress,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
    )
    save_features(args.out, feature_set)
    written = [str(args.out)]
    if args.res101_mat is not None:
        written.append(str(write_res101_mat(args.res101_mat, feature_set)))
    skipped = len(feature_set.skipped)
    print(
        f"extracted {len(feature_set)} of {len(images.paths)} images "
        f"({len(feature_set.class_names)} classes, "
        f"{feature_set.features.shape[1]}-d, {backbone.identity.describe()}); "
        f"skipped {skipped} unreadable image{'s' if skipped != 1 else ''}; wrote {', '.join(written)}"
    )
    return 0
