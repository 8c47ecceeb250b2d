"""`acmr predict` (being built: see the issue tracker)."""

from __future__ import annotations

import argparse

from acmr_core.errors import ACMRError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="(not available yet)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise ACMRError("'acmr predict' is not available in this version yet")
