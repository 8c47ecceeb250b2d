"""Backbone speed: bare forward vs. full extraction throughput, and single-image latency.

    .venv/bin/python benchmarks/bench_backbone.py [--device auto] [--batch-size 8] [--images 48]
        [--workers 1] [--threads N] [--repeats 3] [--latency-runs 10] [--json out.json]

1. **bare forward**: the ResNet-101 alone on a ready tensor batch (``torch.inference_mode``, and on CUDA
   channels_last + autocast, exactly as :class:`acmr_core.features.backbone.Backbone` runs it), images/s.
2. **extraction**: :func:`acmr_core.features.extract.extract_paths` over JPEG files on disk
(decode, EXIF, mode
   conversion, timm transform in DataLoader workers, forward), images/s at the same batch size; the target
   is ≥ 90 % of (1).
3. **single-image latency**: ``load_image`` (decode) + timm transform + forward of one image, as the app
   does per request; median and p90 over ``--latency-runs``, with the median of each part.

Images are generated 500×375 JPEGs (CUB's typical size) in a temporary folder. Weights are seeded random
(identical cost to pretrained ones; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from acmr_core.data.images import load_image
from acmr_core.features.backbone import Backbone, create_backbone
from acmr_core.features.extract import extract_paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=48, help="images extracted per timed pass")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for the extraction")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating bare/extraction passes; medians are reported"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_images(folder: Path, count: int) -> list[Path]:
    """Photo-like JPEGs (noise + gradients compress like photos, unlike flat colours)."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        gradient = np.linspace(0, 255, 500, dtype=np.float32)[None, :, None]
        noise = rng.normal(0, 40, (375, 500, 3)).astype(np.float32)
        pixels = np.clip(gradient * rng.random(3, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{index:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def bare_forward_throughput(backbone: Backbone, batch_size: int, images: int) -> float:
    """Images/s of the model alone on a ready batch, run the way Backbone runs it."""
    model, device = backbone.model, backbone.device
    batch = torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        # backbone._autocast() is the same context Backbone.features_from_tensor uses.
        with torch.inference_mode(), backbone._autocast():
            model(batch).float().cpu()

    run()  # warm-up (allocations, cuDNN/oneDNN kernel selection)
    synchronize(device)
    batches = max(1, images // batch_size)
    started = time.perf_counter()
    for _ in range(batches):
        run()
    synchronize(device)
    return batches * batch_size / (time.perf_counter() - started)


def extraction_throughput(backbone: Backbone, paths: list[Path], batch_size: int, workers: int) -> float:
    extract_paths(backbone, paths[:batch_size], batch_size=batch_size, workers=0, progress=False)  # warm-up
    started = time.perf_counter()
    features, kept, failures = extract_paths(
        backbone, paths, batch_size=batch_size, workers=workers, progress=False
    )
    elapsed = time.perf_counter() - started
    assert len(kept) == len(paths) and not failures and features.shape[0] == len(paths)
    return len(paths) / elapsed


def timed(function: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    synchronize(device)
    started = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - started


def single_image_latency(backbone: Backbone, paths: list[Path], runs: int) -> dict[str, float]:
    device = backbone.device
    backbone.features([load_image(paths[0])])  # warm-up for batch size 1
    totals, decodes, preprocesses, forwards = [], [], [], []
    for run in range(runs):
        path = paths[run % len(paths)]
        image, decode = timed(lambda path=path: load_image(path), device)
        tensor, preprocess = timed(lambda image=image: backbone.preprocess(image)[None], device)
        _, forward = timed(lambda tensor=tensor: backbone.features_from_tensor(tensor), device)
        decodes.append(decode)
        preprocesses.append(preprocess)
        forwards.append(forward)
        totals.append(decode + preprocess + forward)
    return {
        "median_ms": 1000 * statistics.median(totals),
        "p90_ms": 1000 * float(np.percentile(totals, 90)),
        "decode_median_ms": 1000 * statistics.median(decodes),
        "preprocess_median_ms": 1000 * statistics.median(preprocesses),
        "forward_median_ms": 1000 * statistics.median(forwards),
    }


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = create_backbone("random", device=args.device, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="bench_backbone_") as folder:
        paths = write_images(Path(folder), args.images)
        # Alternate the two measurements so load from other processes on a shared machine hits both alike.
        bares, extractions = [], []
        for _ in range(max(1, args.repeats)):
            bares.append(bare_forward_throughput(backbone, args.batch_size, args.images))
            extractions.append(extraction_throughput(backbone, paths, args.batch_size, args.workers))
        bare, extraction = statistics.median(bares), statistics.median(extractions)
        latency = single_image_latency(backbone, paths, args.latency_runs)
    results = {
        "device": describe_device(backbone.device),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "images": args.images,
        "workers": args.workers,
        "repeats": args.repeats,
        "bare_forward_img_s": bare,
        "extraction_img_s": extraction,
        "bare_forward_img_s_each": bares,
        "extraction_img_s_each": extractions,
        "extraction_vs_bare": extraction / bare,
        "single_image": latency,
    }
    print(json.dumps(results, indent=2))
    print(
        f"\n| {results['device']} | batch {args.batch_size}, {args.workers} worker(s) | bare forward "
        f"{bare:.2f} img/s | extraction {extraction:.2f} img/s ({100 * extraction / bare:.0f} % of bare) | "
        f"single image median {latency['median_ms']:.0f} ms (p90 {latency['p90_ms']:.0f} ms; decode "
        f"{latency['decode_median_ms']:.1f}, preprocess {latency['preprocess_median_ms']:.1f}, forward "
        f"{latency['forward_median_ms']:.0f}) |"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
