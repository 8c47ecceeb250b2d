"""`acmr bootstrap {cub,awa2,sun}`: download → features → train → evaluate → bundle, every step cached."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from acmr_core.commands._args import add_device_option, positive_int
from acmr_core.data.sources import SOURCES
from acmr_core.defaults import CHECKPOINTS_DIR
from acmr_core.errors import ACMRError
from acmr_core.runtime import resolve_device


def _url_dest(source_name: str) -> str:
    """The namespace attribute of a source's URL flag (``sun-attributes`` -> ``url_sun_attributes``)."""
    return f"url_{source_name.replace('-', '_')}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bootstrap",
        help="download a benchmark (CUB, AwA2, SUN), extract features, train, evaluate and write a bundle",
        description=(
            "One command from download to a served bundle. Downloads resume after an interruption, are "
            "verified where a checksum is published, and every step is cached: rerunning skips what is done. "
            "See docs/bootstrap.md for sizes, disk space and expected times."
        ),
    )
    parser.add_argument("dataset", choices=("cub", "awa2", "sun"), help="benchmark to build")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="downloads, extracted sources and work files (default: data)",
    )
    parser.add_argument(
        "--weights",
        default="tv_in1k",
        help="backbone weights: a timm tag (default tv_in1k), a local .safetensors/.pth file, or 'random'",
    )
    add_device_option(parser)
    parser.add_argument(
        "--out", type=Path, default=None, help="bundle folder (default: checkpoints/<dataset>-<weights>)"
    )
    parser.add_argument(
        "--checkpoints", type=Path, default=CHECKPOINTS_DIR, help="folder the app lists bundles from"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="fixed ACMR epochs (default: chosen on validation)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--selection",
        default="validation",
        choices=("validation", "reference"),
        help="model selection: on the xlsa17 validation split (default) or the reference's fixed schedule",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per backbone forward pass")
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="image decoding workers"
    )
    parser.add_argument(
        "--shard-size",
        type=positive_int,
        default=None,
        help="images per features shard (default 2048): the unit of resuming, and of work per process "
        "under torchrun (use about images / (4 x processes) there)",
    )
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds without an answer before giving up"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    mirrors = parser.add_argument_group("sources (each overridable for a mirror or a local copy)")
    for source in SOURCES.values():
        mirrors.add_argument(
            source.flag,
            dest=_url_dest(source.name),
            default=None,
            metavar="URL_OR_PATH",
            help=f"{source.filename}: URL, local file, or extracted folder (env {source.env})",
        )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps acmr --help fast (these import torch)
    from acmr_core.features.distributed import ReportedByRoot, distributed_session
    from acmr_core.pipelines.bootstrap import BootstrapOptions, bootstrap

    if args.epochs is not None and args.epochs < 1:
        raise ACMRError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size < 1 or args.workers < 0 or args.timeout <= 0:
        raise ACMRError("--batch-size must be >= 1, --workers >= 0 and --timeout > 0")
    resolve_device(args.device)  # an unknown or unavailable device is refused before any download
    urls = {name: getattr(args, _url_dest(name)) for name in SOURCES if getattr(args, _url_dest(name))}
    options = BootstrapOptions(
        dataset=args.dataset,
        data_dir=args.data_dir,
        weights=args.weights,
        device=args.device,
        out=args.out,
        checkpoints=args.checkpoints,
        epochs=args.epochs,
        seed=args.seed,
        selection=args.selection,
        batch_size=args.batch_size,
        workers=args.workers,
        shard_images=args.shard_size,
        timeout=args.timeout,
        urls=urls,
        progress=not args.no_progress,
    )
    # Under torchrun every rank extracts its share of the features; rank 0 does everything else.
    with distributed_session(args.device) as session:
        try:
            result = bootstrap(options, session)
        except ReportedByRoot:
            return 2
    if result is None:  # not rank 0
        return 0
    metrics = result.metrics
    print(
        f"{args.dataset}: U {metrics['U']:.2f}  S {metrics['S']:.2f}  H {metrics['H']:.2f}  "
        f"ZSL {metrics['zsl_top1']:.2f}  ({result.n_images} images, split from {result.plan_origin}) "
        f"-> bundle {result.bundle_dir}"
    )
    return 0
