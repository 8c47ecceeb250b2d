"""What the demo backbone's learnt part trains, and how: the settings (every one part of the cache key), the
trainable set, the optimiser's parameter groups and the learning-rate schedule.

Kept apart from the loop (:mod:`acmr_core.pipelines.backbone_trainer`) and the renders that feed it
(:mod:`acmr_core.pipelines.backbone_renders`) so that the levers issue 33 probes are plain data: a probe, the
CPU build and the GPU run differ only in a :class:`BackboneTraining`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from acmr_core.errors import ACMRError

#: Named trainable sets, smallest first. Any ``batchnorm+<part>+...`` with parts from :data:`TRAINABLE_PARTS`
#: (in this order) is accepted, and ``all``; sets with ``layer3``, ``layer4`` or ``all`` are probes: their
#: learnt part (tens of MB) is too big for a bundle of at most 20 MB.
TRAINABLE_SETS = (
    "batchnorm",
    "batchnorm+stem",
    "batchnorm+stem+layer1",
    "batchnorm+stem+layer1+layer2",
    "batchnorm+layer4",
    "all",
)
#: The module-name prefixes of each part a trainable set may name after ``batchnorm``.
TRAINABLE_PARTS = {
    "stem": ("conv1",),
    "layer1": ("layer1.",),
    "layer2": ("layer2.",),
    "layer3": ("layer3.",),
    "layer4": ("layer4.",),
}
OPTIMISERS = ("adam", "adamw", "sgd")
#: Steps of ``acmr build-demo --quick`` (a smoke test of the whole path).
QUICK_STEPS = 3


@dataclass(frozen=True)
class BackboneTraining:
    """How the learnt part is trained; every field is part of the cache key.

    ``conv_lr_scale``: the convolutions' learning rate relative to ``learning_rate`` (BatchNorm affines and
    the heads keep ``learning_rate``); Adam at 3e-3 suits a few affine parameters far better than millions of
    convolution weights. ``warmup_steps``: linear warm-up, then cosine decay to zero at ``steps``.
    ``curriculum_steps``: shape first: step 0 draws only single large plain objects, so that shape is nearly
    all that varies within a colour and background; their share falls linearly to none at this step.
    ``repeats``: steps each rendered batch serves, each under its own flips and quarter turns (a GPU trains
    faster than a few CPU cores draw).
    """

    trainable: str = "batchnorm+stem+layer1"
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 3e-3
    input_size: int = 112
    shape_weight: float = 2.0  # shape is the group the random features miss; its loss counts double
    seed: int = 0
    optimiser: str = "adam"
    conv_lr_scale: float = 1.0
    warmup_steps: int = 0
    curriculum_steps: int = 0
    repeats: int = 1

    def __post_init__(self) -> None:
        trainable_parts(self.trainable)  # refuses an unknown set with its reason
        if self.steps < 1 or self.batch_size < 2 or not 16 <= self.input_size <= 1024:
            raise ACMRError("backbone training needs >= 1 step, a batch of >= 2 and an input side of 16-1024")
        if self.optimiser not in OPTIMISERS:
            raise ACMRError(f"unknown optimiser {self.optimiser!r}; expected one of {', '.join(OPTIMISERS)}")
        if not (self.learning_rate > 0 and self.conv_lr_scale > 0 and math.isfinite(self.learning_rate)):
            raise ACMRError("the learning rate and the convolutions' scale of it must be positive")
        if not 0 <= self.warmup_steps < self.steps or not 0 <= self.curriculum_steps <= self.steps:
            raise ACMRError("warm-up steps must be fewer than the steps, curriculum steps at most as many")
        if not 1 <= self.repeats <= 8:
            raise ACMRError(
                f"a rendered batch may serve 1 to 8 steps (its 8 flips and turns), not {self.repeats}"
            )


def trainable_parts(trainable: str) -> tuple[str, ...] | None:
    """The parts a set names after ``batchnorm`` (``None`` for ``all``); refuses an unknown set."""
    if trainable == "all":
        return None
    first, *parts = trainable.split("+")
    order = list(TRAINABLE_PARTS)
    known = first == "batchnorm" and all(p in TRAINABLE_PARTS for p in parts)
    if not known or [order.index(p) for p in parts] != sorted({order.index(p) for p in parts}):
        raise ACMRError(
            f"unknown trainable set {trainable!r}; expected 'all' or 'batchnorm' followed by parts among "
            f"{', '.join(order)} in that order (e.g. {TRAINABLE_SETS[2]})"
        )
    return tuple(parts)


def select_trainable(model: torch.nn.Module, trainable: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then make the named set trainable: all BatchNorm affines plus whole modules."""
    parts = trainable_parts(trainable)
    for parameter in model.parameters():
        parameter.requires_grad_(parts is None)
    if parts is None:
        return list(model.parameters())
    prefixes = tuple(prefix for part in parts for prefix in TRAINABLE_PARTS[part])
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


def make_optimiser(
    config: BackboneTraining, backbone: list[torch.nn.Parameter], heads: list[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """The optimiser over the trainable backbone parameters and the heads; convolution weights (4-D) in a
    group of their own at ``learning_rate × conv_lr_scale``. Each group keeps its peak rate as ``peak_lr``."""
    convs = [p for p in backbone if p.ndim == 4]
    others = [p for p in backbone if p.ndim != 4] + list(heads)
    groups = [{"params": others, "peak_lr": config.learning_rate}]
    if convs:
        groups.append({"params": convs, "peak_lr": config.learning_rate * config.conv_lr_scale})
    for group in groups:
        group["lr"] = group["peak_lr"]
    if config.optimiser == "sgd":
        return torch.optim.SGD(groups, lr=config.learning_rate, momentum=0.9, nesterov=True)
    if config.optimiser == "adamw":
        return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=1e-4)
    return torch.optim.Adam(groups, lr=config.learning_rate)


def learning_rate_factor(config: BackboneTraining, step: int) -> float:
    """The schedule at ``step`` (0-based): linear warm-up to 1, then cosine decay towards 0 at the last step.

    A pure function of the step, so a resumed run continues the same schedule without a scheduler state.
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - config.warmup_steps) / span))


def set_learning_rate(optimiser: torch.optim.Optimizer, config: BackboneTraining, step: int) -> None:
    factor = learning_rate_factor(config, step)
    for group in optimiser.param_groups:
        group["lr"] = group["peak_lr"] * factor
