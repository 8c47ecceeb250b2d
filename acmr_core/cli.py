"""The ``acmr`` command line.

Each sub-command lives in its own module under :mod:`acmr_core.commands` and exposes
``register(subparsers)`` (adds its parser and sets ``handler``) and a handler ``run(args) -> int``.
A package built on the library adds commands the same way through the ``acmr.commands`` entry-point group
(the app contributes ``serve``: ``app.cli:register``), so the library never imports it.
Commands import heavy libraries (torch, timm, gradio) inside ``run`` so ``acmr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import NoReturn

from acmr_core.errors import ACMRError
from acmr_core.version import __version__

#: The library's own commands (modules of :mod:`acmr_core.commands`).
COMMAND_MODULES = ("train", "evaluate", "extract", "bundle", "predict", "describe", "build_demo", "bootstrap")
#: Entry-point group through which installed packages contribute commands (name -> ``register``).
COMMAND_ENTRY_POINTS = "acmr.commands"
#: The order shown by ``acmr --help``; contributed commands not named here come last.
HELP_ORDER = (
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

Register = Callable[[argparse._SubParsersAction], None]


def command_registrars() -> dict[str, Register]:
    """Every command's ``register``, by command name, in ``acmr --help`` order."""
    found: dict[str, Register] = {
        name: importlib.import_module(f"acmr_core.commands.{name}").register for name in COMMAND_MODULES
    }
    for entry in entry_points(group=COMMAND_ENTRY_POINTS):
        if entry.name not in found:  # an install seen twice (e.g. editable and built) lists it twice
            found[entry.name] = entry.load()
    position = {name: index for index, name in enumerate(HELP_ORDER)}
    return dict(sorted(found.items(), key=lambda item: position.get(item[0], len(HELP_ORDER))))


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit 2, like every other refusal of the CLI (the usage block
    argparse prints above them would bury the one line that says what is wrong; ``--help`` still shows it).

    Sub-command parsers are made of the same class (``add_subparsers`` defaults to the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="acmr",
        description="ACMR generalized zero-shot classification: train, evaluate, extract features, serve.",
    )
    parser.add_argument("--version", action="version", version=f"acmr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in command_registrars().values():
        register(subparsers)
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
