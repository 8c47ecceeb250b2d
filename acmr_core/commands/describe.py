"""`acmr describe`: the attribute values a free description sets, against a bundle's own attribute names."""

from __future__ import annotations

import argparse
import json
import sys

from acmr_core.commands._args import add_bundle_option, bundle_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "describe",
        help="turn a free description into attribute values of a bundle (to define a class)",
        description=(
            "Read a free description (e.g. 'a small red bird with black wings') against the attribute "
            "names of a bundle and print the attributes it sets, values in [0, 1]. Only what the "
            "text mentions is set; nothing is added to the bundle (use the app or /define_class for that)."
        ),
    )
    parser.add_argument("text", metavar="TEXT", help="the description (quote it; '-' reads standard input)")
    add_bundle_option(parser)
    parser.add_argument("--json", action="store_true", help="print only the JSON object {attribute: value}")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `acmr --help` fast (torch)
    from acmr_core.bundle.format import load_bundle
    from acmr_core.describe.reader import read_description

    text = sys.stdin.read() if args.text == "-" else args.text
    bundle = load_bundle(bundle_folder(args.bundle), device="cpu")
    reading = read_description(text, bundle.catalog.attribute_names)
    if args.json:
        print(json.dumps(reading.values))
        return 0
    width = max(len(name) for name in reading.values)
    for name, value in reading.values.items():
        print(f"{name:<{width}}  {value:g}")
    print("\nrecognised:\n" + "\n".join(f"  {line}" for line in reading.summary().splitlines()))
    if reading.unknown_words:
        print("not used: " + ", ".join(reading.unknown_words))
    return 0
