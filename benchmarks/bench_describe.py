"""Describing a class (issue 15): how well free text is read, and how fast text and images are read.

* accuracy on the hand-written descriptions of tests/data/descriptions.json: the share of *mentioned*
  attribute groups read exactly right (the set of attributes it sets in that group equals the intended one;
  target ≥ 90 % on the demo world) and the share of *unmentioned* groups where anything was set (target
  ≤ 5 %); for the demo set, the two held-out demo sets and the CUB set (CUB's 312 names from xlsa17);
* latency of one description (``read_description``, median over every description, vocabulary cached; and
  the one-off vocabulary build per bundle) and of one image reading (``StudioService.attributes_from_images``
  on one decoded example image) beside the bare backbone forward on the same image, interleaved.

Usage: ``python benchmarks/bench_describe.py [--repeats 15] [--markdown FILE]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the app sets it
DESCRIPTIONS = REPO_ROOT / "tests" / "data" / "descriptions.json"
XLSA17 = Path(os.environ.get("ACMR_XLSA17", REPO_ROOT.parent / "shared" / "data" / "xlsa17"))
DEMO_BUNDLE = REPO_ROOT / "checkpoints" / "demo-world"


def group_scores(cases: Sequence[dict], names: Sequence[str]) -> dict[str, int]:
    from dataclasses import asdict

    from acmr_core.describe.scoring import score_descriptions

    return asdict(score_descriptions(cases, names))


def median_ms(samples: Sequence[float]) -> float:
    return 1000 * statistics.median(samples)


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def text_latency(cases: Sequence[dict], names: Sequence[str], repeats: int) -> dict[str, float]:
    from acmr_core.describe.reader import _vocabulary, read_description
    from acmr_core.errors import UserClassError

    def read_all() -> list[float]:
        samples = []
        for case in cases:
            started = time.perf_counter()
            with contextlib.suppress(UserClassError):  # an unrecognised text is timed too
                read_description(case["text"], names)
            samples.append(time.perf_counter() - started)
        return samples

    _vocabulary.cache_clear()
    vocabulary_s = timed(lambda: _vocabulary(tuple(names)))
    samples = [sample for _ in range(repeats) for sample in read_all()]
    return {
        "vocabulary_ms": 1000 * vocabulary_s,
        "median_ms": median_ms(samples),
        "max_ms": 1000 * max(samples),
    }


def image_latency(repeats: int) -> dict[str, float]:
    """One image reading vs the bare backbone forward on the same decoded image, interleaved."""
    import torch

    from acmr_core.data.images import load_image
    from acmr_core.serving.service import StudioService

    torch.set_num_threads(1)
    image_path = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))[0]
    image = load_image(image_path)
    with tempfile.TemporaryDirectory() as store:
        service = StudioService.open(DEMO_BUNDLE, device="cpu", user_classes_dir=store)
        forward, reading, from_file = [], [], []
        for _ in range(repeats):
            forward.append(timed(lambda: service.backbone.features([image])))
            reading.append(timed(lambda: service.attributes_from_images([image])))
            from_file.append(timed(lambda: service.attributes_from_images([image_path])))
        ten = timed(lambda: service.attributes_from_images([image_path] * 10))
        service.store.close()
    return {
        "forward_ms": median_ms(forward),
        "reading_ms": median_ms(reading),
        "from_file_ms": median_ms(from_file),
        "ten_images_s": ten,
    }


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} = {100 * part / whole:.1f} %"


def markdown(command: str, accuracy: dict[str, dict], text: dict[str, dict], images: dict[str, float]) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Measured {dt.date.today()} on {platform.machine()} ({os.cpu_count()} cores, load ≈ {load:.1f}), "
        f"1 torch thread: `{command}`",
        "",
        "| description set | descriptions | mentioned groups read right | unmentioned groups wrongly set |",
        "|---|---|---|---|",
    ]
    for label, scores in accuracy.items():
        lines.append(
            f"| {label} | {scores['descriptions']} | {share(scores['right'], scores['mentioned'])} | "
            f"{share(scores['wrongly_set'], scores['unmentioned'])} |"
        )
    lines += ["", "| latency | median | other |", "|---|---|---|"]
    for label, result in text.items():
        lines.append(
            f"| one description, {label} | {result['median_ms']:.2f} ms | max {result['max_ms']:.1f} ms; "
            f"vocabulary built once per bundle in {result['vocabulary_ms']:.0f} ms |"
        )
    lines.append(
        f"| one image reading (decoded image) | {images['reading_ms']:.0f} ms | bare backbone forward "
        f"{images['forward_ms']:.0f} ms (same run, interleaved) |"
    )
    lines.append(
        f"| one image reading from a PNG file | {images['from_file_ms']:.0f} ms | ten images: "
        f"{images['ten_images_s']:.1f} s |"
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats (default 15)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    args = parser.parse_args()
    from acmr_core.bundle.format import load_bundle

    data = json.loads(DESCRIPTIONS.read_text(encoding="utf-8"))
    demo_names = load_bundle(DEMO_BUNDLE, device="cpu").catalog.attribute_names
    cub_lines = (XLSA17 / "CUB" / "attributes.txt").read_text(encoding="utf-8").splitlines()
    cub_names = [line.split(" ", 1)[1].strip() for line in cub_lines if line.strip()]
    accuracy = {
        "demo world (written before the matcher)": group_scores(data["demo"], demo_names),
        "demo world, held out 1 (scored, then used for three fixes)": group_scores(
            data["demo_held_out"], demo_names
        ),
        "demo world, held out 2 (never used to change the matcher)": group_scores(
            data["demo_held_out_2"], demo_names
        ),
        "CUB, 312 attributes": group_scores(data["cub"], cub_names),
        "CUB, held out (never used to change the matcher)": group_scores(data["cub_held_out"], cub_names),
    }
    every_demo = data["demo"] + data["demo_held_out"] + data["demo_held_out_2"]
    text = {
        "demo world (17 attributes)": text_latency(every_demo, demo_names, args.repeats),
        "CUB (312 attributes)": text_latency(data["cub"], cub_names, args.repeats),
    }
    images = image_latency(args.repeats)
    command = "python benchmarks/bench_describe.py " + " ".join(sys.argv[1:])
    table = markdown(command.strip(), accuracy, text, images)
    print(table)
    print(json.dumps({"accuracy": accuracy, "text": text, "images": images}, indent=1))
    if args.markdown is not None:
        args.markdown.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
