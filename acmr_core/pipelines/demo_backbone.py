"""The demo backbone's learnt part: train a few parameters of the seeded random ResNet-101 on demo renders.

Pretrained weights cannot be downloaded everywhere, and a seeded random network is portable (bit-identical
on any machine) but blind to much of what the demo world draws. So the network keeps its seeded random
convolutions and only a small set of parameters is trained (BatchNorm first, as in Frankle, Schwab &
Morcos, *Training BatchNorm and Only BatchNorm*, ICLR 2021; optionally the stem and ``layer1``), supervised
by attribute group (one linear head per group, the heads are thrown away). What is kept is that learnt part
only (:func:`acmr_core.features.weights.save_learnt_parameters`, 4 MB per million parameters in float32)
and the full weights are re-created from the seed at load.

This module is the cached entry point (what ``acmr build-demo`` calls); the settings and levers are
:mod:`~acmr_core.pipelines.backbone_training`'s, the loop and its resumable checkpoints
:mod:`~acmr_core.pipelines.backbone_trainer`'s, and the renders, drawn in worker processes,
:mod:`~acmr_core.pipelines.backbone_renders`'.

Training images: :data:`~acmr_core.data.demo_world.BACKBONE_TRAIN_SEED` renders of
:func:`~acmr_core.data.demo_world.backbone_training_combinations`, i.e. never an unseen class's combination
nor one kept for the define-your-own-class check, and never a bundle, gallery or evaluation seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from acmr_core.data.demo_world import (
    BACKBONE_TRAIN_SEED,
    BACKBONE_VALIDATION_SEED,
    DEFAULT_RESIDUAL_SCALE,
    DemoWorld,
    backbone_training_combinations,
    held_out_combinations,
)
from acmr_core.errors import ACMRError
from acmr_core.features.weights import load_model, resolve_weights, save_learnt_parameters
from acmr_core.pipelines.backbone_trainer import BackboneTrainer
from acmr_core.pipelines.backbone_training import QUICK_STEPS, TRAINABLE_SETS, BackboneTraining
from acmr_core.runtime import resolve_device
from acmr_core.version import __version__

log = logging.getLogger(__name__)

__all__ = [
    "QUICK_STEPS",
    "TRAINABLE_SETS",
    "BackboneTraining",
    "TrainingRun",
    "TrainingStopped",
    "default_cache_dir",
    "learnt_backbone",
]

#: Seen-class renders per class that validate the trained part (held-out seed, never trained on).
VALIDATION_PER_CLASS = 4
#: Renders per held-out combination (the unseen classes' and the define-your-own ones) that score it.
HELD_OUT_PER_COMBINATION = 8
#: What changes the batches a given :class:`BackboneTraining` draws; part of the cache key (2: each step's
#: combinations from a generator seeded with the step, so that worker processes can draw them).
SAMPLER_VERSION = 2


@dataclass(frozen=True)
class TrainingRun:
    """How one run of the training is carried out; none of it changes the result on a given device, so none
    of it is part of the cache key. ``workers``: processes that draw the renders (``None``: one per CPU core
    but one, none on a single core). ``checkpoint_every_s``: how often a resumable checkpoint is written
    beside the cached file. ``time_limit_s``: stop (with a checkpoint) after this many seconds of training;
    the next run resumes."""

    workers: int | None = None
    checkpoint_every_s: float = 300.0
    time_limit_s: float | None = None

    def worker_count(self) -> int:
        if self.workers is not None:
            if self.workers < 0:
                raise ACMRError(f"render workers must be 0 or more, got {self.workers}")
            return self.workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(cores - 1, 0) if cores > 1 else 0


class TrainingStopped(ACMRError):
    """The time limit ended a run before its last step; its checkpoint resumes it."""


def learnt_backbone(
    config: BackboneTraining,
    world: DemoWorld,
    *,
    model_name: str = "resnet101",
    backbone_seed: int = 0,
    residual_scale: float = DEFAULT_RESIDUAL_SCALE,
    device: str = "auto",
    cache_dir: Path | None = None,
    progress: bool = True,
    run: TrainingRun | None = None,
    on_trained: Callable[[BackboneTrainer, Path], None] | None = None,
) -> Path:
    """The learnt-parameters file for these settings: from the cache when it was trained before, else
    trained now (minutes on a GPU, an hour or more on a CPU; resumed from its checkpoint when an earlier run
    stopped) and cached. Raises :class:`TrainingStopped` when ``run.time_limit_s`` ends it first.
    ``on_trained``: called with the trainer and the written file after a training (a report's figures)."""
    run = run or TrainingRun()
    combinations = backbone_training_combinations(world)
    key = cache_key(config, model_name, backbone_seed, residual_scale, combinations)
    target = (cache_dir or default_cache_dir()) / f"demo-backbone-{key[:16]}.safetensors"
    if target.is_file():
        log.info("demo backbone: learnt part from the cache (%s)", target)
        return target
    checkpoint = checkpoint_path(target)
    spec = resolve_weights("random", model_name, backbone_seed, residual_scale)
    model, _ = load_model(spec)
    trainer = BackboneTrainer(model, config, resolve_device(device))
    trainer.resume(checkpoint, key)
    finished = trainer.fit(combinations, workers=run.worker_count(), checkpoint=checkpoint, key=key,
                           checkpoint_every_s=run.checkpoint_every_s, time_limit_s=run.time_limit_s,
                           progress=progress)  # fmt: skip
    if not finished:
        raise TrainingStopped(
            f"the demo backbone stopped at step {trainer.step} of {config.steps} (time limit); its "
            f"checkpoint {checkpoint} resumes it: run the same command again"
        )
    scores = trainer_scores(trainer, world)
    log.info("demo backbone: held-out accuracy %s", scores)
    path = save_learnt_parameters(
        target, trainer.learnt_tensors(), model_name=model_name, seed=backbone_seed,
        residual_scale=residual_scale, input_size=config.input_size,
        extra={"training": json.dumps(asdict(config)), "validation": json.dumps(scores["seen"]),
               "held_out": json.dumps(scores["held_out"]), "history": json.dumps(trainer.history),
               "combinations": str(len(combinations)), "render_seed": str(BACKBONE_TRAIN_SEED)},
    )  # fmt: skip
    checkpoint.unlink(missing_ok=True)
    if on_trained is not None:
        on_trained(trainer, path)
    return path


def trainer_scores(trainer: BackboneTrainer, world: DemoWorld) -> dict[str, dict[str, float]]:
    """Per-group accuracy (%) of the trained heads on held-out renders (:data:`BACKBONE_VALIDATION_SEED`):
    ``seen`` = new renders of the seen classes, ``held_out`` = renders of combinations never trained on (the
    unseen classes' and the define-your-own-class ones)."""
    seen = [c.values for c in world.classes if c.seen]
    held_out = [c.values for c in world.classes if not c.seen] + held_out_combinations(world)
    return {
        "seen": trainer.accuracy(seen, VALIDATION_PER_CLASS, BACKBONE_VALIDATION_SEED),
        "held_out": trainer.accuracy(held_out, HELD_OUT_PER_COMBINATION, BACKBONE_VALIDATION_SEED),
    }


def default_cache_dir() -> Path:
    """``$ACMR_CACHE_DIR``, else ``~/.cache/acmr``."""
    return Path(os.environ.get("ACMR_CACHE_DIR", Path.home() / ".cache" / "acmr"))


def checkpoint_path(target: Path) -> Path:
    """Where the resumable checkpoint of the run that makes ``target`` lives (beside it, until it is made)."""
    return target.with_name(f"{target.stem}.checkpoint.safetensors")


def cache_key(
    config: BackboneTraining, model_name: str, seed: int, scale: float, combinations: Sequence[dict]
) -> str:
    """The SHA-256 of everything that decides the learnt part: settings, backbone, combinations, seeds."""
    payload = {
        "config": asdict(config),
        "model": model_name,
        "seed": seed,
        "residual_scale": scale,
        "combinations": list(combinations),
        "render_seed": BACKBONE_TRAIN_SEED,
        "sampler": SAMPLER_VERSION,
        "acmr": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
