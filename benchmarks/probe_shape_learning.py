"""Issue 33 probes: which setting makes the demo backbone learn shape soonest (a few hundred steps each).

One probe = :class:`~acmr_core.pipelines.backbone_trainer.BackboneTrainer` (the loop ``acmr build-demo``
runs) for ``--steps`` steps of fresh renders of the allowed combinations, then the heads' per-group accuracy
on renders of the 36 held-out combinations (the 6 unseen classes' and the 30 define-your-own ones, 8 each,
render seed 12, eval mode). Prints one JSON object: the route, the trainable set and its size, images, wall
time, the loss trajectory (every 25 steps: total, then each group) and the held-out accuracy.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/probe_shape_learning.py --trainable all \
        --conv-lr-scale 0.1 --steps 200 --batch-size 16 --json-out /tmp/probe.json

Run one probe at a time on a shared machine; a probe's figures say which lever moves the shape loss first,
not what a long run reaches.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acmr_core.data import demo_world
from acmr_core.features.weights import load_model, resolve_weights
from acmr_core.pipelines.backbone_trainer import BackboneTrainer
from acmr_core.pipelines.backbone_training import BackboneTraining
from acmr_core.pipelines.demo_backbone import HELD_OUT_PER_COMBINATION
from acmr_core.runtime import resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = BackboneTraining()
    parser.add_argument("--route", default="", help="a label for the table")
    parser.add_argument("--trainable", default=default.trainable)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=default.learning_rate)
    parser.add_argument("--conv-lr-scale", type=float, default=default.conv_lr_scale)
    parser.add_argument("--optimiser", default=default.optimiser)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--curriculum-steps", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--input-size", type=int, default=default.input_size)
    parser.add_argument("--residual-scale", type=float, default=demo_world.DEFAULT_RESIDUAL_SCALE)
    parser.add_argument("--shape-weight", type=float, default=default.shape_weight)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    config = BackboneTraining(
        trainable=args.trainable, steps=args.steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, input_size=args.input_size, shape_weight=args.shape_weight,
        optimiser=args.optimiser, conv_lr_scale=args.conv_lr_scale, warmup_steps=args.warmup_steps,
        curriculum_steps=args.curriculum_steps, repeats=args.repeats,
    )  # fmt: skip
    world = demo_world.default_world()
    model, _ = load_model(resolve_weights("random", "resnet101", 0, args.residual_scale))
    trainer = BackboneTrainer(model, config, resolve_device(args.device))
    parameters = sum(p.numel() for p in trainer.parameters)
    started = time.perf_counter()
    trainer.fit(demo_world.backbone_training_combinations(world), workers=args.workers, progress=False)
    wall = time.perf_counter() - started
    held_out = [c.values for c in world.classes if not c.seen] + demo_world.held_out_combinations(world)
    accuracy = trainer.accuracy(held_out, HELD_OUT_PER_COMBINATION, demo_world.BACKBONE_VALIDATION_SEED)
    learnt = trainer.learnt_tensors()
    result = {
        "route": args.route,
        "config": asdict(config),
        "residual_scale": args.residual_scale,
        "trainable_parameters": parameters,
        "learnt_part_mb": round(sum(t.numel() for t in learnt.values()) * 4 / 1e6, 1),
        "images": config.steps * config.batch_size,
        "wall_s": round(wall, 1),
        "s_per_step": round(wall / config.steps, 2),
        "threads": torch.get_num_threads(),
        "history_columns": ["step", "total", *trainer.groups],
        "history": trainer.history,
        "held_out_accuracy": accuracy,
    }
    text = json.dumps(result)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
