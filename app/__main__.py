"""``python -m app``: serve the ACMR zero-shot studio (same options as ``acmr serve``)."""

from __future__ import annotations

import argparse
import logging
import sys

from acmr_core.errors import ACMRError
from app.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve the ACMR zero-shot studio.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except ACMRError as error:
        print(f"python -m app: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
