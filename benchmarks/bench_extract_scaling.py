"""Scaling of `acmr extract` over processes: 1 process vs. torchrun with N, same images, same output file.

    .venv/bin/python benchmarks/bench_extract_scaling.py [--processes 1,2] [--images 48] [--batch-size 8]
        [--shard-size 8] [--workers 0] [--device cpu] [--repeats 3] [--json out.json]

Each configuration runs the real command line, alternating (1, N, 1, N, …) so that load from other processes
hits both alike: ``python -m acmr_core extract …`` for one process, ``python -m torch.distributed.run
--standalone --nproc_per_node=N -m acmr_core extract …`` for N. On CPU every process gets one torch thread
(``OMP_NUM_THREADS=1``), so N processes use N cores.

Reported per configuration (medians over ``--repeats``):

* **extraction images/s**: images ÷ the slowest rank's extraction time (from each rank's
  ``finished its shards; K images in T s`` log line: decode + forward + shard writes, after start-up);
* **wall images/s**: images ÷ the whole command's wall time (start-up, model build, merge included);
* **scaling efficiency**: extraction images/s with N processes ÷ (N × with one process).

It also checks that every run wrote the same features file, byte for byte (exit status 1 if not, on CPU; on
GPUs it is reported only). Images are 500×375 JPEGs (CUB's
typical size, :func:`benchmarks.bench_backbone.write_images`); weights are seeded random ResNet-101 (the same
cost as pretrained ones, nothing downloaded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import write_images  # the benchmarks folder is not a package on sys.path

RANK_LINE = re.compile(r"rank (\d+)/(\d+): finished its shards; (\d+) images in ([\d.]+) s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=8, help="images per shard (default: one batch)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader decode workers per process")
    parser.add_argument("--device", default="cpu", help="cpu, or auto/cuda (then rank r uses cuda:r)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def command(processes: int, images: Path, out: Path, args: argparse.Namespace) -> list[str]:
    extract = [
        "extract", "--images", str(images), "--out", str(out), "--weights", "random",
        "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
        "--workers", str(args.workers), "--device", args.device, "--no-progress",
    ]  # fmt: skip
    if processes == 1:
        return [sys.executable, "-m", "acmr_core", *extract]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
    ]
    return [*launcher, "-m", "acmr_core", *extract]


def run_once(
    processes: int, images: Path, out: Path, args: argparse.Namespace, n_images: int
) -> dict[str, Any]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.perf_counter()
    finished = subprocess.run(
        command(processes, images, out, args), env=environment, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{finished.stderr[-4000:]}")
    ranks = {
        int(rank): (int(count), float(seconds))
        for rank, _, count, seconds in RANK_LINE.findall(finished.stderr)
    }
    if sorted(ranks) != list(range(processes)):
        raise SystemExit(
            f"expected a throughput line from each of {processes} rank(s):\n{finished.stderr[-4000:]}"
        )
    slowest = max(seconds for _, seconds in ranks.values())
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return {
        "wall_s": wall,
        "extraction_s": slowest,
        "extraction_img_s": n_images / slowest,
        "wall_img_s": n_images / wall,
        "per_rank": {rank: {"images": count, "seconds": seconds} for rank, (count, seconds) in ranks.items()},
        "sha256": digest,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(text) for text in args.processes.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {count: [] for count in counts}
    with tempfile.TemporaryDirectory(prefix="bench_extract_scaling_") as folder:
        images = Path(folder) / "images"
        (images / "class").mkdir(parents=True)
        write_images(images / "class", args.images)
        for repeat in range(args.repeats):
            for count in counts:
                result = run_once(count, images, Path(folder) / "features.safetensors", args, args.images)
                runs[count].append(result)
                print(
                    f"repeat {repeat + 1}, {count} process(es): {result['extraction_img_s']:.2f} img/s "
                    f"extraction, {result['wall_img_s']:.2f} img/s wall ({result['wall_s']:.1f} s)",
                    file=sys.stderr,
                )
    digests = {run["sha256"] for results in runs.values() for run in results}
    base = statistics.median(run["extraction_img_s"] for run in runs[counts[0]])
    summary = {
        "images": args.images,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "workers": args.workers,
        "device": args.device,
        "repeats": args.repeats,
        "identical_outputs": len(digests) == 1,
        "configurations": {
            count: {
                "extraction_img_s": statistics.median(run["extraction_img_s"] for run in results),
                "wall_img_s": statistics.median(run["wall_img_s"] for run in results),
                "extraction_img_s_each": [round(run["extraction_img_s"], 3) for run in results],
                "scaling_efficiency": statistics.median(run["extraction_img_s"] for run in results)
                / (count / counts[0] * base),
                "runs": results,
            }
            for count, results in runs.items()
        },
    }
    print(json.dumps(summary, indent=2))
    for count, result in summary["configurations"].items():
        each = ", ".join(map(str, result["extraction_img_s_each"]))
        print(
            f"| {count} | {result['extraction_img_s']:.2f} ({each}) | {result['wall_img_s']:.2f} "
            f"| {100 * result['scaling_efficiency']:.0f} % |"
        )
    print(f"identical features files across all runs: {summary['identical_outputs']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    # On CPU the files must be identical (tested); on GPUs autocast/cuDNN make that a report, not a failure.
    return 0 if summary["identical_outputs"] or args.device != "cpu" else 1


if __name__ == "__main__":
    sys.exit(main())
