"""``acmr serve`` and ``python -m app``: start the studio on a model bundle.

The app contributes this command to the ``acmr`` CLI through the ``acmr.commands`` entry point (see
pyproject.toml), so the library never imports the app. Only ``run`` loads torch and gradio (inside
:func:`app.serve`): ``acmr --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from acmr_core.commands._args import add_device_option
from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_BUNDLE, USER_CLASSES_DIR
from acmr_core.serving.locate import find_bundle
from app.server import serve

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve options, shared by ``acmr serve`` and ``python -m app``."""
    parser.add_argument(
        "--bundle",
        default=DEFAULT_BUNDLE,
        help="bundle folder, or the name of one in --checkpoints "
        f"(default: {DEFAULT_BUNDLE}, the shipped demo)",
    )
    parser.add_argument(
        "--checkpoints", type=Path, default=CHECKPOINTS_DIR, help="folder of bundles listed in the app"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off unless asked for)"
    )
    add_device_option(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--user-classes",
        type=Path,
        metavar="DIR",
        help="each visitor keeps their own classes (the default, for a public server), stored in DIR "
        f"(default ./{USER_CLASSES_DIR} or $ACMR_USER_CLASSES_DIR)",
    )
    where.add_argument(
        "--shared-classes",
        type=Path,
        nargs="?",
        const=True,  # no DIR: the default folder, resolved where the library reads it (once)
        default=False,
        metavar="DIR",
        help="operator mode: one set of classes, shared by every visitor (a single local user, or a "
        "curated deployment), stored in DIR (default: the --user-classes default); `make run` uses it",
    )


def _store_folder(args: argparse.Namespace) -> Path | None:
    """The folder named on the command line, or None for the library's default."""
    return args.shared_classes if isinstance(args.shared_classes, Path) else args.user_classes


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``acmr`` sub-commands (the ``acmr.commands`` entry point)."""
    parser = subparsers.add_parser("serve", help="start the web app (predict, define classes, latent space)")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Fail fast on a wrong --bundle, before seconds of importing torch and gradio.
    find_bundle(args.bundle, args.checkpoints)
    serve(
        bundle=args.bundle,
        checkpoints=args.checkpoints,
        host=args.host,
        port=args.port,
        share=args.share,
        device=args.device,
        user_classes_dir=_store_folder(args),
        per_visitor=args.shared_classes is False,
    )
    return 0
