"""The ``acmr`` command line.

Each sub-command lives in its own module under :mod:`acmr_core.commands` and exposes
``register(subparsers)`` (adds its parser and sets ``handler``) and a handler ``run(args) -> int``.
Commands import heavy libraries (torch, timm, gradio) inside ``run`` so ``acmr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from acmr_core import __version__
from acmr_core.errors import ACMRError

# Order is the order shown by ``acmr --help``.
COMMAND_MODULES = (
    "train",
    "evaluate",
    "extract",
    "bundle",
    "predict",
    "describe",
    "build_demo",
    "serve",
    "bootstrap",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acmr",
        description="ACMR generalized zero-shot classification: train, evaluate, extract features, serve.",
    )
    parser.add_argument("--version", action="version", version=f"acmr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"acmr_core.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except ACMRError as error:
        # One line, no traceback: the message already says what is wrong and what to do.
        print(f"acmr {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"acmr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
