"""`acmr bootstrap` (being built: see the issue tracker)."""

from __future__ import annotations

import argparse

from acmr_core.errors import ACMRError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bootstrap", help="(not available yet)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise ACMRError("'acmr bootstrap' is not available in this version yet")
