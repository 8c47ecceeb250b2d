"""Prepared GPU check (issue 14): ACMR training steps/s, ResNet-101 extraction images/s, end-to-end predict
latency and a whole CUB-sized ``acmr train``, written as a Markdown report.

On a GPU machine (about 5-8 minutes on one data-centre GPU)::

    python benchmarks/gpu_check.py --device cuda --out-md docs/benchmarks/gpu.md --json /tmp/gpu_check.json

Dry run on the CPU with tiny inputs (what the test suite runs, in seconds; the figures mean nothing)::

    python benchmarks/gpu_check.py --device cpu --tiny --out-md /tmp/gpu_dry_run.md

Sections, each timed after a warm-up and synchronised on CUDA:

1. **ACMR steps/s** — :func:`acmr_core.training.fit.fit_acmr` for one epoch of random
CUB-shaped data (batch 50),
   fp32 and bf16 autocast, eager and with ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) on CUDA.
2. **ResNet-101 forward images/s** at batch 1 / 64 / 256, run exactly as
:class:`acmr_core.features.backbone.Backbone`
   runs it (channels_last + bf16 autocast on CUDA), and **extraction from JPEG files**
   (:func:`acmr_core.features.extract.extract_paths`: decode, timm transform, forward) at batch 256.
3. **Multi-GPU extraction** with ``torchrun --standalone --nproc_per_node=<GPUs> -m acmr_core extract``;
   skipped, with the reason, where ``acmr extract`` under torchrun is not available.
4. **Predict latency** end to end (decode + preprocess + backbone + ACMR + classifier) through
   :class:`acmr_core.serving.service.StudioService` on the shipped demo bundle; median and p90.
5. **Whole ``acmr train``** (the default protocol, one seed) on synthetic CUB written in the xlsa17 layout
   (real CUB attributes and splits when ``--xlsa17`` / ``ACMR_XLSA17`` points at the metadata).

Targets (issue 14, data-centre GPU): extraction >= 2000 images/s, predict <= 15 ms per image, a whole CUB
``acmr train`` <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backbone import bare_forward_throughput, describe_device, synchronize, write_images

from acmr_core.features.backbone import create_backbone
from acmr_core.features.extract import extract_paths
from acmr_core.model.config import make_configs
from acmr_core.runtime import has_native_bf16, resolve_device
from acmr_core.training.fit import fit_acmr

REPO = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = REPO / "checkpoints" / "demo-world"


@dataclass(frozen=True)
class Sizes:
    """How much work each section does: the real check, or a dry run that only proves the script works."""

    acmr_steps: int
    backbone: str
    batches: tuple[int, ...]
    forward_images: int
    jpeg_images: int
    predict_runs: int
    train_images_per_class: int | None
    train_feature_dim: int
    train_epochs: int | None


FULL = Sizes(200, "resnet101", (1, 64, 256), 1024, 1024, 50, None, 2048, None)
TINY = Sizes(4, "resnet18", (1, 2), 4, 4, 1, 8, 16, 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--device", default="cuda", help="cuda[:N] for the check, cpu for a dry run")
    parser.add_argument("--tiny", action="store_true", help="dry run: tiny inputs, resnet18, 2 ACMR epochs")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="decode workers")
    parser.add_argument("--xlsa17", type=Path, default=None, help="xlsa17 metadata for the synthetic CUB")
    parser.add_argument("--out-md", type=Path, default=None, help="write the Markdown report here")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    return parser.parse_args(argv)


def timed(function: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def acmr_steps_per_second(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Training steps/s of fit_acmr (batch 50) on random CUB-shaped data, per precision and compile mode."""
    arch, train = make_configs("CUB", feature_dim=2048, attribute_dim=312, num_classes=200)
    n = sizes.acmr_steps * train.batch_size
    rng = np.random.default_rng(0)
    features = rng.random((n, 2048), dtype=np.float32)
    labels = rng.integers(0, 200, n)
    attributes = rng.random((200, 312), dtype=np.float32)
    results: dict[str, Any] = {}
    precisions = ["fp32", "bf16"] if device.type == "cuda" or has_native_bf16(device) else ["fp32"]
    modes = [None, "reduce-overhead"] if device.type == "cuda" else [None]
    for precision in precisions:
        for mode in modes:
            config = replace(train, epochs=1, precision=precision)
            name = f"{precision}{'' if mode is None else '_' + mode}"

            def run(config=config, mode=mode, rows=n) -> None:
                fit_acmr(
                    features[:rows],
                    labels[:rows],
                    attributes,
                    arch,
                    config,
                    device,
                    0,
                    False,
                    compile_mode=mode,
                )

            try:
                run(rows=min(n, 4 * train.batch_size))  # warm-up: kernels, autotuning, compilation
                results[name] = sizes.acmr_steps / timed(run, device)
            except Exception as error:  # a compile failure is a finding, not a crash of the whole check
                results[name] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return results


def extraction(device: torch.device, sizes: Sizes, workers: int, folder: Path) -> dict[str, Any]:
    """Backbone forward images/s per batch size (as Backbone runs it), and extraction from JPEG files."""
    backbone = create_backbone("random", sizes.backbone, str(device), use_cache=False)
    forward = {
        str(batch): bare_forward_throughput(backbone, batch, max(sizes.forward_images, batch))
        for batch in sizes.batches
    }
    paths = write_images(folder, sizes.jpeg_images)
    batch = sizes.batches[-1]
    extract_paths(backbone, paths[:batch], batch_size=batch, workers=0, progress=False)  # warm-up
    started = time.perf_counter()
    _, kept, failures = extract_paths(backbone, paths, batch_size=batch, workers=workers, progress=False)
    seconds = time.perf_counter() - started
    if failures or len(kept) != len(paths):
        raise RuntimeError(f"extraction failed on {len(failures)} of {len(paths)} generated images")
    return {
        "model": sizes.backbone,
        "autocast": "bf16 + channels_last" if device.type == "cuda" else "none (fp32 on CPU)",
        "forward_images_per_s": forward,
        "jpeg_extraction_images_per_s": len(paths) / seconds,
        "jpeg_batch_size": batch,
        "workers": workers,
        "images": len(paths),
        "paths": paths,
    }


def torchrun_extraction(
    device: torch.device, folder: Path, paths: list[Path], sizes: Sizes
) -> dict[str, Any]:
    """``acmr extract`` under torchrun on every GPU; skipped (with why) where that is not available."""
    if device.type != "cuda":
        return {"skipped": "needs CUDA GPUs"}
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        return {"skipped": "torchrun is not on PATH"}
    gpus = torch.cuda.device_count()
    listing = folder / "images.txt"
    listing.write_text("".join(f"{path.name}\n" for path in paths))
    command = [
        torchrun, "--standalone", f"--nproc_per_node={gpus}", "-m", "acmr_core", "extract",
        "--images", str(listing), "--weights", "random", "--model", sizes.backbone,
        "--out", str(folder / "features.safetensors"), "--batch-size", str(sizes.batches[-1]),
        "--workers", str(max(1, (os.cpu_count() or gpus) // gpus)), "--no-progress",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1][:200]
        return {"skipped": f"acmr extract under torchrun is not available (exit {done.returncode}: {last})"}
    return {"gpus": gpus, "images": len(paths), "images_per_s_including_startup": len(paths) / seconds}


def predict_latency(device: torch.device, sizes: Sizes, paths: list[Path], folder: Path) -> dict[str, Any]:
    """End-to-end predict on the shipped demo bundle: decode + preprocess + backbone + ACMR + classifier."""
    from acmr_core.serving.service import StudioService

    service = StudioService.open(DEMO_BUNDLE, device=str(device), user_classes_dir=folder / "user_classes")
    times = []
    for run in range(sizes.predict_runs):
        path = paths[run % len(paths)]
        times.append(timed(lambda path=path: service.predict(path), device))
    return {
        "bundle": DEMO_BUNDLE.name,
        "runs": len(times),
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * float(np.percentile(times, 90)),
    }


def whole_train(device: torch.device, sizes: Sizes, folder: Path, xlsa17: Path | None) -> dict[str, Any]:
    """``acmr train``'s protocol on synthetic CUB, one seed, timed end to end (data loading included)."""
    from acmr_core.data.synthetic import write_synthetic_xlsa17
    from acmr_core.data.xlsa17 import load_xlsa17
    from acmr_core.training.protocol import run_protocol

    write_synthetic_xlsa17(
        folder, "CUB", feature_dim=sizes.train_feature_dim, images_per_class=sizes.train_images_per_class,
        xlsa17_dir=xlsa17,
    )  # fmt: skip
    started = time.perf_counter()
    data = load_xlsa17(folder, "CUB")
    metrics = run_protocol(
        data, [0], device=device, precision="auto", epochs=sizes.train_epochs, progress=False
    )
    seconds = time.perf_counter() - started
    seed = metrics["per_seed"][0]
    return {
        "seconds": seconds,
        "classes": int(data.attributes.shape[0]),
        "trainval_images": int(data.trainval.size),
        "precision": metrics["precision"],
        "acmr_epochs": seed["acmr_epochs"],
        **{key: seed[key] for key in ("U", "S", "H")},
    }


def markdown(results: dict[str, Any], dry_run: bool) -> str:
    """The report: one table per section, targets beside the figures."""
    lines = [f"## GPU check {'DRY RUN (CPU, tiny inputs: not a measurement)' if dry_run else 'results'}", ""]
    lines += [f"Date {results['date']}, device: {results['device_name']}, torch {results['torch']}.", ""]
    lines += [f"Command: `{results['command']}`", "", "| measure | value | target |", "|---|---|---|"]
    for name, value in results["acmr_steps_per_s"].items():
        shown = f"{value:.1f} steps/s" if isinstance(value, float) else value
        lines.append(f"| ACMR training, batch 50, {name} | {shown} | |")
    ext = results["extraction"]
    for batch, value in ext["forward_images_per_s"].items():
        lines.append(
            f"| {ext['model']} forward, batch {batch}, {ext['autocast']} | {value:.1f} images/s | ≥ 2000 |"
        )
    lines.append(
        f"| extraction from {ext['images']} JPEGs, batch {ext['jpeg_batch_size']}, "
        f"{ext['workers']} workers | {ext['jpeg_extraction_images_per_s']:.1f} images/s | ≥ 2000 |"
    )
    multi = results["torchrun_extraction"]
    value = (
        multi.get("skipped")
        or f"{multi['images_per_s_including_startup']:.1f} images/s on {multi['gpus']} GPUs"
    )
    lines.append(f"| torchrun extraction (all GPUs, start-up included) | {value} | |")
    predict = results["predict"]
    lines.append(
        f"| predict end to end ({predict['bundle']}), median / p90 of {predict['runs']} | "
        f"{predict['median_ms']:.1f} / {predict['p90_ms']:.1f} ms | ≤ 15 ms |"
    )
    train = results["train"]
    lines.append(
        f"| whole `acmr train`, synthetic CUB ({train['classes']} classes, {train['trainval_images']} "
        f"trainval images), 1 seed, {train['precision']}, ACMR epochs {train['acmr_epochs']} | "
        f"{train['seconds']:.1f} s (H {train['H']:.1f}) | ≤ 60 s |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    sizes = TINY if args.tiny else FULL
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # pay the one-off torch._dynamo import up front
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device_name": describe_device(device),
        "torch": torch.__version__,
        "dry_run": args.tiny,
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        folder = Path(tmp)
        results["acmr_steps_per_s"] = acmr_steps_per_second(device, sizes)
        (folder / "jpeg").mkdir()
        results["extraction"] = extraction(device, sizes, args.workers, folder / "jpeg")
        paths = results["extraction"].pop("paths")
        results["torchrun_extraction"] = torchrun_extraction(device, folder / "jpeg", paths, sizes)
        results["predict"] = predict_latency(device, sizes, paths, folder)
        results["train"] = whole_train(device, sizes, folder / "xlsa17", args.xlsa17)
    report = markdown(results, args.tiny)
    print(report)
    if args.out_md:
        args.out_md.write_text(report, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
