"""Argument types shared by the sub-commands (argparse turns their errors into one usage line)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from acmr_core.errors import ACMRError
from acmr_core.runtime import DEVICE_NAMES, check_device_name

#: ``--device``'s help, the same in every command (``acmr serve`` included).
DEVICE_HELP = f"{DEVICE_NAMES}; auto (the default) picks CUDA when present, else the CPU"


def _integer_at_least(text: str, minimum: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got '{text}'") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _integer_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _integer_at_least(text, 0, "an integer ≥ 0")


def finite_float(text: str) -> float:
    """A finite float: ``float()`` alone accepts "nan" and "inf", which then poison every score computed from
    them (NaN probabilities, invalid JSON)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def device_name(text: str) -> str:
    """A ``--device`` value: refused at parse time unless :func:`acmr_core.runtime.resolve_device` takes it
    (whether that GPU exists is only known once torch is loaded, in the command)."""
    try:
        return check_device_name(text)
    except ACMRError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_device_option(parser: argparse._ActionsContainer) -> None:
    """``--device``, the same for every command (:func:`device_name` validates it)."""
    parser.add_argument("--device", type=device_name, default="auto", metavar="DEVICE", help=DEVICE_HELP)


def add_bundle_option(parser: argparse._ActionsContainer, default: str = "default: demo-world") -> None:
    """``--bundle``, the same for every command: resolved by :func:`bundle_folder`."""
    parser.add_argument(
        "--bundle", default=None, help=f"bundle folder, or its name in checkpoints/ ({default})"
    )


def bundle_folder(name: str | None) -> Path:
    """The bundle a command's ``--bundle`` names: a folder, or a bundle's name in ``checkpoints/`` as
    ``acmr serve`` takes it (``--bundle demo-world``); none given: the default bundle."""
    # lazy: bundle.format imports torch, and `acmr --help` stays fast
    from acmr_core.bundle.format import default_bundle_path
    from acmr_core.defaults import CHECKPOINTS_DIR
    from acmr_core.serving.locate import find_bundle

    return default_bundle_path() if name is None else find_bundle(name, CHECKPOINTS_DIR)
