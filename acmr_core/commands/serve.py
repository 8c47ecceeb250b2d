"""`acmr serve`: start the Gradio app on a model bundle (the same as ``python -m app``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from acmr_core.errors import BundleError
from acmr_core.runtime import DEVICE_CHOICES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve options, shared by ``acmr serve`` and ``python -m app``."""
    parser.add_argument(
        "--bundle",
        default="demo-world",
        help="bundle folder, or the name of one in --checkpoints (default: demo-world, the shipped demo)",
    )
    parser.add_argument(
        "--checkpoints", type=Path, default=Path("checkpoints"), help="folder of bundles listed in the app"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off unless asked for)"
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="torch device (default auto)"
    )
    parser.add_argument(
        "--user-classes",
        type=Path,
        default=Path(os.environ.get("ACMR_USER_CLASSES_DIR", "user_classes")),
        help="folder of the user-class stores, one SQLite file per bundle "
        "(default ./user_classes or $ACMR_USER_CLASSES_DIR)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="start the web app (predict, define classes, latent space)")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Fail fast on a wrong --bundle, before seconds of importing torch and gradio.
    if not (Path(args.bundle).is_dir() or (args.checkpoints / args.bundle).is_dir()):
        raise BundleError(
            f"bundle {args.bundle!r} not found (neither a folder nor in {args.checkpoints}/); "
            "give a bundle folder, or rebuild the demo with 'acmr build-demo'"
        )
    from app import serve  # gradio is imported here only, so `acmr --help` stays fast

    serve(
        bundle=args.bundle,
        checkpoints=args.checkpoints,
        host=args.host,
        port=args.port,
        share=args.share,
        device=args.device,
        user_classes_dir=args.user_classes,
    )
    return 0
