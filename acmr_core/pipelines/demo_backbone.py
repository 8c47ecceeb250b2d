"""The demo backbone's learnt part: train a few parameters of the seeded random ResNet-101 on demo renders.

Pretrained weights cannot be downloaded everywhere, and a seeded random network is portable (bit-identical
on any machine) but blind to much of what the demo world draws. So the network keeps its seeded random
convolutions and only a small set of parameters is trained (BatchNorm first, as in Frankle, Schwab &
Morcos, *Training BatchNorm and Only BatchNorm*, ICLR 2021; optionally the stem and ``layer1``), supervised
by attribute group (one linear head per group, the heads are thrown away). What is kept is that learnt part
only (:func:`acmr_core.features.weights.save_learnt_parameters`, well under a megabyte per million
parameters) and the full weights are re-created from the seed at load.

Training images: :data:`~acmr_core.data.demo_world.BACKBONE_TRAIN_SEED` renders of
:func:`~acmr_core.data.demo_world.backbone_training_combinations`, i.e. never an unseen class's combination
nor one kept for the define-your-own-class check, and never a bundle, gallery or evaluation seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from acmr_core.data.demo_render import ATTRIBUTE_GROUPS
from acmr_core.data.demo_world import (
    BACKBONE_TRAIN_SEED,
    BACKBONE_VALIDATION_SEED,
    DEFAULT_RESIDUAL_SCALE,
    DemoWorld,
    backbone_training_combinations,
    render_combination,
)
from acmr_core.errors import ACMRError
from acmr_core.features.backbone import eval_transform
from acmr_core.features.weights import load_model, resolve_weights, save_learnt_parameters
from acmr_core.runtime import resolve_device
from acmr_core.version import __version__

log = logging.getLogger(__name__)

#: What may be trained, smallest first; every set includes the ones before it.
TRAINABLE_SETS = ("batchnorm", "batchnorm+stem", "batchnorm+stem+layer1", "batchnorm+stem+layer1+layer2")
_SET_MODULE_PREFIXES = {"stem": ("conv1",), "layer1": ("layer1.",), "layer2": ("layer2.",)}
#: Steps of ``acmr build-demo --quick`` (a smoke test of the whole path).
QUICK_STEPS = 3
#: Seen-class renders per class that validate the trained part (held-out seed, never trained on).
VALIDATION_PER_CLASS = 4


@dataclass(frozen=True)
class BackboneTraining:
    """How the learnt part is trained; every field is part of the cache key."""

    trainable: str = "batchnorm+stem+layer1"
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 3e-3
    input_size: int = 112
    shape_weight: float = 2.0  # shape is the group the random features miss; its loss counts double
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE_SETS:
            raise ACMRError(
                f"unknown trainable set {self.trainable!r}; expected one of {', '.join(TRAINABLE_SETS)}"
            )
        if self.steps < 1 or self.batch_size < 2 or not 16 <= self.input_size <= 1024:
            raise ACMRError("backbone training needs >= 1 step, a batch of >= 2 and an input side of 16-1024")


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
) -> Path:
    """The learnt-parameters file for these settings: from the cache when it was trained before, else
    trained now (minutes) and cached."""
    combinations = backbone_training_combinations(world)
    key = _cache_key(config, model_name, backbone_seed, residual_scale, combinations)
    target = (cache_dir or default_cache_dir()) / f"demo-backbone-{key[:16]}.safetensors"
    if target.is_file():
        log.info("demo backbone: learnt part from the cache (%s)", target)
        return target
    spec = resolve_weights("random", model_name, backbone_seed, residual_scale)
    model, _ = load_model(spec)
    trainer = _Trainer(model, config, resolve_device(device))
    trainer.fit(combinations, progress)
    validation = trainer.validate([c.values for c in world.classes if c.seen])
    log.info("demo backbone: validation on held-out seen renders %s", validation)
    return save_learnt_parameters(
        target, trainer.learnt_tensors(), model_name=model_name, seed=backbone_seed,
        residual_scale=residual_scale, input_size=config.input_size,
        extra={"training": json.dumps(asdict(config)), "validation": json.dumps(validation),
               "combinations": str(len(combinations)), "render_seed": str(BACKBONE_TRAIN_SEED)},
    )  # fmt: skip


def default_cache_dir() -> Path:
    """``$ACMR_CACHE_DIR``, else ``~/.cache/acmr``."""
    return Path(os.environ.get("ACMR_CACHE_DIR", Path.home() / ".cache" / "acmr"))


def _cache_key(
    config: BackboneTraining, model_name: str, seed: int, scale: float, combinations: Sequence[dict]
) -> str:
    payload = {
        "config": asdict(config),
        "model": model_name,
        "seed": seed,
        "residual_scale": scale,
        "combinations": list(combinations),
        "render_seed": BACKBONE_TRAIN_SEED,
        "acmr": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class _Trainer:
    """The network with only the chosen parameters trainable, one linear head per attribute group."""

    def __init__(self, model: torch.nn.Module, config: BackboneTraining, device: torch.device) -> None:
        self.config, self.device = config, device
        self.model = model.to(device)
        # The eval transform, exactly as extraction and uploads will see the images.
        _, self.transform = eval_transform(model, config.input_size)
        self.groups = list(ATTRIBUTE_GROUPS)
        self.parameters = _select_trainable(model, config.trainable)
        generator = torch.Generator().manual_seed(config.seed)
        features = int(getattr(model, "num_features", 2048))
        self.heads = torch.nn.ModuleList(
            [torch.nn.Linear(features, len(ATTRIBUTE_GROUPS[g])) for g in self.groups]
        )
        for head in self.heads:  # seeded, so a rerun trains the same heads
            torch.nn.init.normal_(head.weight, std=0.01, generator=generator)
            torch.nn.init.zeros_(head.bias)
        self.heads.to(device)
        self.weights = torch.tensor([config.shape_weight if g == "shape" else 1.0 for g in self.groups])

    def _batch(self, combinations: Sequence[dict[str, str]], seed: int, start: int) -> torch.Tensor:
        images = [render_combination(values, seed, start + i) for i, values in enumerate(combinations)]
        return torch.stack([self.transform(image) for image in images]).to(self.device)

    def _labels(self, combinations: Sequence[dict[str, str]]) -> torch.Tensor:
        rows = [[ATTRIBUTE_GROUPS[g].index(values[g]) for g in self.groups] for values in combinations]
        return torch.tensor(rows, device=self.device)

    def fit(self, combinations: Sequence[dict[str, str]], progress: bool) -> None:
        config = self.config
        optimiser = torch.optim.Adam([*self.parameters, *self.heads.parameters()], lr=config.learning_rate)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.steps)
        order = np.random.default_rng(config.seed)
        self.model.train()
        bar = tqdm(range(config.steps), desc="demo backbone", unit="step", disable=not progress)
        for step in bar:
            picked = [combinations[i] for i in order.integers(0, len(combinations), config.batch_size)]
            images = self._batch(picked, BACKBONE_TRAIN_SEED, step * config.batch_size)
            labels = self._labels(picked)
            with self._autocast():
                features = self.model(images)
            losses = torch.stack(
                [
                    torch.nn.functional.cross_entropy(head(features.float()), labels[:, k])
                    for k, head in enumerate(self.heads)
                ]
            )
            loss = (losses * self.weights.to(losses.device)).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            shape_loss = losses[self.groups.index("shape")].item()
            bar.set_postfix(loss=f"{loss.item():.2f}", shape=f"{shape_loss:.2f}")
        self.model.eval()

    @torch.inference_mode()
    def validate(self, seen: Sequence[dict[str, str]]) -> dict[str, float]:
        """Per-group accuracy (%) of the heads on held-out renders of the seen classes (eval mode)."""
        self.model.eval()
        combos = [values for values in seen for _ in range(VALIDATION_PER_CLASS)]
        correct = torch.zeros(len(self.groups))
        for start in range(0, len(combos), self.config.batch_size):
            part = combos[start : start + self.config.batch_size]
            with self._autocast():
                features = self.model(self._batch(part, BACKBONE_VALIDATION_SEED, start)).float()
            labels = self._labels(part)
            for k, head in enumerate(self.heads):
                correct[k] += (head(features).argmax(1) == labels[:, k]).sum().cpu()
        return {g: round(100.0 * float(correct[k]) / len(combos), 1) for k, g in enumerate(self.groups)}

    def learnt_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor training changed: the trainable parameters and all BatchNorm running statistics."""
        trainable = {id(p) for p in self.parameters}
        changed = {n: p for n, p in self.model.named_parameters() if id(p) in trainable}
        for name, buffer in self.model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                changed[name] = buffer
        return {name: tensor.detach().cpu().float() for name, tensor in sorted(changed.items())}

    def _autocast(self) -> AbstractContextManager:

        if self.device.type != "cuda":
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _select_trainable(model: torch.nn.Module, trainable: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then make the named set trainable: all BatchNorm affines plus whole modules."""
    prefixes = tuple(p for part in trainable.split("+")[1:] for p in _SET_MODULE_PREFIXES[part])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    chosen: list[torch.nn.Parameter] = []
    for name, module in model.named_modules():
        wanted = isinstance(module, torch.nn.BatchNorm2d) or (prefixes and name.startswith(prefixes))
        if not wanted or name == "":
            continue
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad:
                parameter.requires_grad_(True)
                chosen.append(parameter)
    return chosen
