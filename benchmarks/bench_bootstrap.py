"""Bootstrap speed: loopback download throughput (with and without an interruption) and the per-step wall
time of a whole ``acmr bootstrap`` on a tiny CUB-layout dataset served from 127.0.0.1.

    .venv/bin/python benchmarks/bench_bootstrap.py [--megabytes 128] [--images-per-class 3] [--epochs 1]
        [--device cpu] [--json out.json]

1. **download**: :func:`acmr_core.data.download.fetch` of an in-memory file over loopback HTTP,
MB/s including the
   sha256 verification; then the same file with the connection cut half-way (resumed with ``Range``).
2. **pipeline**: every step of :func:`acmr_core.pipelines.bootstrap.bootstrap` (backbone, sources,
plan, features,
   dataset, train, bundle) on 8 classes × ``--images-per-class`` tiny JPEGs with random backbone weights,
   then the same command again (everything cached).

Nothing leaves the machine. Real-dataset times are dominated by feature extraction (see
docs/benchmarks/backbone.md for images/s) and ACMR training (docs/benchmarks for ``acmr train``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from acmr_core.data.download import fetch  # noqa: E402
from acmr_core.pipelines.bootstrap import BootstrapOptions, bootstrap  # noqa: E402
from tests.fixtures_archives import LoopbackServer, build_tiny_dataset, sha256_hex  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=128, help="size of the downloaded test file")
    parser.add_argument("--images-per-class", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def bench_download(server: LoopbackServer, megabytes: int, folder: Path) -> dict[str, Any]:
    payload = np.random.default_rng(0).integers(0, 256, size=megabytes << 20, dtype=np.uint8).tobytes()
    checksum = f"sha256:{sha256_hex(payload)}"
    url = server.serve("bench/payload.bin", payload)
    results: dict[str, Any] = {"megabytes": megabytes}
    for label, plan in (("clean", ()), ("cut_half_way_then_resumed", ("cut",))):
        server.plan("bench/payload.bin", *plan)
        dest = folder / f"{label}.bin"
        started = time.perf_counter()
        fetch(url, dest, checksum=checksum, progress=False)
        seconds = time.perf_counter() - started
        results[label] = {"seconds": round(seconds, 3), "MB_per_s": round(megabytes / seconds, 1)}
        dest.unlink()
    return results


def bench_pipeline(server: LoopbackServer, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    tiny = build_tiny_dataset("cub", images_per_class=args.images_per_class)
    urls = {name: server.serve(f"cub/{tiny.filenames[name]}", data) for name, data in tiny.archives.items()}
    options = BootstrapOptions(
        dataset="cub",
        data_dir=folder / "data",
        weights="random",
        device=args.device,
        checkpoints=folder / "checkpoints",
        epochs=args.epochs,
        workers=0,
        batch_size=16,
        urls=urls,
        progress=False,
    )
    started = time.perf_counter()
    first = bootstrap(options)
    first_total = time.perf_counter() - started
    started = time.perf_counter()
    second = bootstrap(options)
    second_total = time.perf_counter() - started
    return {
        "images": first.n_images,
        "first_run": {"total_s": round(first_total, 2), **{k: round(v, 2) for k, v in first.seconds.items()}},
        "rerun": {"total_s": round(second_total, 3), "skipped": second.skipped_steps},
        "metrics": {key: round(first.metrics[key], 2) for key in ("U", "S", "H", "zsl_top1")},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as temporary, LoopbackServer().running() as server:
        folder = Path(temporary)
        results = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
            "download": bench_download(server, args.megabytes, folder),
            "pipeline": bench_pipeline(server, args, folder),
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
