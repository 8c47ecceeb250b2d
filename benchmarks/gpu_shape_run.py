"""Issue 33's GPU run: train the demo backbone's learnt part on one GPU inside a time budget, score it, and
check that the part loads and hashes the same on the CPU. One command; everything it makes lands in --out.

On the GPU machine (one H100, at most 8 minutes; the image has torch, timm, safetensors, huggingface_hub)::

    bash benchmarks/gpu_shape_run.sh   # runs: python3 benchmarks/gpu_shape_run.py --device cuda --out "$OUT"

Dry run on the CPU with a tiny setting (what tests/test_gpu_shape_run.py runs; the figures mean nothing)::

    python benchmarks/gpu_shape_run.py --device cpu --tiny --out /tmp/gpu_shape_dry

What it does:

1. **Calibrate** (unless ``--steps`` is given): a few steps of the real setting with the render workers,
   timed, to find how many steps fit the budget (``--budget-min``, default 6.5, minus a reserve for scoring
   and the CPU check), rounded down to a hundred.
2. **Train** with :func:`acmr_core.pipelines.demo_backbone.learnt_backbone` (the step ``acmr build-demo``
   runs) into ``--out`` as its cache folder, with a checkpoint every 2 minutes and a time limit: a stopped
   run leaves ``demo-backbone-*.checkpoint.safetensors``, which the same command with ``--steps`` resumes.
3. **Score**: the heads' per-group accuracy on held-out renders (seen classes, and the 36 held-out
   combinations), recorded in the learnt part's header too.
4. **Portability**: the SHA-256 of the trained weights in memory (taken on the training device) against the
   identity of the file loaded on the CPU; and the features of 8 renders on both devices.

Writes ``gpu_shape_run.json`` (everything above, the loss history, images/s and the time spent waiting for
renders) and prints the ``acmr build-demo`` command that builds the bundle from the part on a CPU: copy the
``demo-backbone-*.safetensors`` file into ``$ACMR_CACHE_DIR`` (default ``~/.cache/acmr``) and run it there;
its settings give the same cache key, so the build takes the part instead of training it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acmr_core.data import demo_world
from acmr_core.features.backbone import create_backbone
from acmr_core.features.weights import load_model, resolve_weights, state_dict_sha256
from acmr_core.pipelines import demo_backbone
from acmr_core.pipelines.backbone_trainer import BackboneTrainer
from acmr_core.pipelines.backbone_training import BackboneTraining
from acmr_core.runtime import resolve_device

log = logging.getLogger("gpu_shape_run")
#: Seconds kept for scoring, saving and the CPU check after training.
RESERVE_S = 75.0
CALIBRATION_WARMUP_STEPS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu_shape_run")))
    parser.add_argument(
        "--budget-min",
        type=float,
        default=6.5,
        help="wall-clock budget of this script (the .sh adds ≈ 1 min)",
    )
    parser.add_argument("--calibrate-s", type=float, default=20.0, help="seconds of timed calibration steps")
    parser.add_argument("--steps", type=int, default=None, help="fixed step count (skips the calibration)")
    parser.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        help="a checkpoint an earlier, stopped run left in its --out",
    )
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: cores - 1)")
    parser.add_argument("--tiny", action="store_true", help="a CPU dry run: tiny input, batch and steps")
    parser.add_argument("--trainable", default="batchnorm+stem+layer1+layer2")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--conv-lr-scale", type=float, default=0.1)
    parser.add_argument("--optimiser", default="adam")
    parser.add_argument("--warmup-fraction", type=float, default=0.05)
    parser.add_argument("--curriculum-fraction", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=4, help="steps each rendered batch serves (1-8)")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--residual-scale", type=float, default=demo_world.DEFAULT_RESIDUAL_SCALE)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace, steps: int) -> BackboneTraining:
    if args.tiny:
        return BackboneTraining(
            trainable=args.trainable, steps=steps, batch_size=2, input_size=32, repeats=args.repeats
        )
    return BackboneTraining(
        trainable=args.trainable,
        steps=steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        input_size=args.input_size,
        optimiser=args.optimiser,
        conv_lr_scale=args.conv_lr_scale,
        warmup_steps=int(steps * args.warmup_fraction),
        curriculum_steps=int(steps * args.curriculum_fraction),
        repeats=args.repeats,
    )


def fresh_trainer(config: BackboneTraining, args: argparse.Namespace) -> BackboneTrainer:
    model, _ = load_model(resolve_weights("random", "resnet101", 0, args.residual_scale))
    return BackboneTrainer(model, config, resolve_device(args.device))


def calibrate(args: argparse.Namespace, workers: int, budget_s: float) -> dict[str, Any]:
    """Steps per second of the real setting (render workers included), and the steps that fit ``budget_s``."""
    probe = settings(args, steps=10**6)
    trainer = fresh_trainer(probe, args)
    combinations = demo_world.backbone_training_combinations(demo_world.default_world())
    trainer.fit(combinations, workers=workers, stop_at=CALIBRATION_WARMUP_STEPS, progress=False)
    _synchronize(args.device)
    trainer.data_wait_s = 0.0
    started = time.monotonic()
    limit = 1.0 if args.tiny else args.calibrate_s
    trainer.fit(combinations, workers=workers, time_limit_s=limit, progress=False)
    _synchronize(args.device)
    elapsed = time.monotonic() - started
    per_s = (trainer.step - CALIBRATION_WARMUP_STEPS) / elapsed
    steps = 2 if args.tiny else max(100, int(per_s * budget_s * 0.9) // 100 * 100)
    result = {
        "steps_per_s": round(per_s, 2),
        "images_per_s": round(per_s * probe.batch_size, 1),
        "rendered_per_s": round(per_s * probe.batch_size / probe.repeats, 1),
        "data_wait_share": round(trainer.data_wait_s / max(elapsed, 1e-9), 3),
        "steps": steps,
    }
    log.info("calibration: %s", result)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def build_command(config: BackboneTraining, residual_scale: float) -> str:
    """The ``acmr build-demo`` command whose learnt-part settings (hence cache key) are ``config``'s."""
    return (
        f"acmr build-demo --out checkpoints/demo-world --trainable {config.trainable} "
        f"--backbone-steps {config.steps} --backbone-batch {config.batch_size} "
        f"--backbone-lr {config.learning_rate:g} --conv-lr-scale {config.conv_lr_scale:g} "
        f"--backbone-optimiser {config.optimiser} --warmup-steps {config.warmup_steps} "
        f"--curriculum-steps {config.curriculum_steps} --render-repeats {config.repeats} "
        f"--input-size {config.input_size} --residual-scale {residual_scale:g}"
    )


def portability(path: Path, trained_sha: str, device: str) -> dict[str, Any]:
    """The part loaded on the CPU: its identity hash against the trained weights', and its features on a
    few renders against the training device's."""
    cpu = create_backbone(str(path), device="cpu", use_cache=False)
    world = demo_world.default_world()
    images = [world.render(i, demo_world.DEFAULT_EVAL_SEED, 0) for i in range(8)]
    result: dict[str, Any] = {
        "trained_sha256": trained_sha,
        "cpu_loaded_sha256": cpu.identity.weights_sha256,
        "same_hash": cpu.identity.weights_sha256 == trained_sha,
    }
    if device != "cpu":
        here = create_backbone(str(path), device=device, use_cache=False)
        a, b = cpu.features(images), here.features(images)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        result.update(
            device_loaded_sha256=here.identity.weights_sha256,
            min_feature_cosine_cpu_vs_device=round(float(cosine.min()), 5),
        )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    started = time.monotonic()
    torch.backends.cudnn.benchmark = True  # one input shape throughout: let cuDNN pick its fastest kernels
    args.out.mkdir(parents=True, exist_ok=True)
    workers = demo_backbone.TrainingRun(workers=args.workers).worker_count()
    report: dict[str, Any] = {
        "device": _describe(args.device),
        "torch": torch.__version__,
        "workers": workers,
        "budget_min": args.budget_min,
    }
    budget_s = args.budget_min * 60.0
    if args.steps is None:
        report["calibration"] = calibrate(args, workers, budget_s - RESERVE_S - (time.monotonic() - started))
        steps = report["calibration"]["steps"]
    else:
        steps = args.steps
    config = settings(args, steps)
    report["config"] = asdict(config)
    if args.resume_from is not None:  # the checkpoint's name carries its settings' cache key
        shutil.copyfile(args.resume_from, args.out / args.resume_from.name)
    report["build_command"] = build_command(config, args.residual_scale)
    seen: dict[str, Any] = {}

    def on_trained(trainer: BackboneTrainer, path: Path) -> None:
        seen.update(
            trained_sha256=state_dict_sha256(trainer.model.state_dict()),
            history=trainer.history,
            images_per_s=round(trainer.images_per_s, 1),
            data_wait_s=round(trainer.data_wait_s, 1),
        )

    left = budget_s - RESERVE_S - (time.monotonic() - started)
    run = demo_backbone.TrainingRun(workers=workers, checkpoint_every_s=120.0, time_limit_s=max(left, 1.0))
    training_started = time.monotonic()
    try:
        path = demo_backbone.learnt_backbone(
            config,
            demo_world.default_world(),
            residual_scale=args.residual_scale,
            device=args.device,
            cache_dir=args.out,
            progress=False,
            run=run,
            on_trained=on_trained,
        )
    except demo_backbone.TrainingStopped as stopped:
        report.update(stopped=str(stopped), resume_command=_resume_command(args, steps))
        _write(args.out, report)
        log.info("%s", stopped)
        return 3
    report["training_s"] = round(time.monotonic() - training_started, 1)
    report["learnt_part"] = {"file": path.name, "mb": round(path.stat().st_size / 1e6, 2)}
    report.update(seen)
    report["scores"] = _header_scores(path)
    report["portability"] = portability(path, seen.get("trained_sha256", ""), args.device)
    report["wall_s"] = round(time.monotonic() - started, 1)
    _write(args.out, report)
    print(json.dumps({k: report[k] for k in ("scores", "portability", "config", "wall_s")}, indent=1))
    print("build the bundle on a CPU with:", report["build_command"])
    return 0 if report["portability"]["same_hash"] else 1


def _header_scores(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    return {"seen": json.loads(header["validation"]), "held_out": json.loads(header["held_out"])}


def _resume_command(args: argparse.Namespace, steps: int) -> str:
    flags = [
        f"--steps {steps}",
        f"--trainable {args.trainable}",
        f"--batch-size {args.batch_size}",
        f"--learning-rate {args.learning_rate:g}",
        f"--conv-lr-scale {args.conv_lr_scale:g}",
        f"--optimiser {args.optimiser}",
        f"--warmup-fraction {args.warmup_fraction:g}",
        f"--curriculum-fraction {args.curriculum_fraction:g}",
        f"--repeats {args.repeats}",
        f"--input-size {args.input_size}",
        f"--residual-scale {args.residual_scale:g}",
    ]
    return (
        "python3 benchmarks/gpu_shape_run.py --device cuda --out $OUT --resume-from "
        "<the demo-backbone-*.checkpoint.safetensors this run left> " + " ".join(flags)
    )


def _write(out: Path, report: dict[str, Any]) -> None:
    (out / "gpu_shape_run.json").write_text(json.dumps(report, indent=1) + "\n")


def _synchronize(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _describe(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"
    return f"CPU {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


if __name__ == "__main__":
    raise SystemExit(main())
