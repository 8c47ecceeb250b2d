"""The renders that train the demo backbone's learnt part, drawn in worker processes.

Every batch is a pure function of (training seed, step): which combinations it shows comes from a generator
seeded with both, and image ``i`` of step ``s`` is render ``s × batch + i`` of
:data:`~acmr_core.data.demo_world.BACKBONE_TRAIN_SEED`. So the batches do not depend on how many workers draw
them, or in which process, and a run resumed at step ``s`` sees exactly the batches an uninterrupted run
would. Worker ``w`` of ``W`` draws steps ``w, w + W, …``; the DataLoader hands them back in step order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from acmr_core.data.demo_render import ATTRIBUTE_GROUPS
from acmr_core.data.demo_world import BACKBONE_TRAIN_SEED, render_combination

#: Batches each worker keeps ready ahead of the training loop.
PREFETCH_PER_WORKER = 4
#: What the shape-first curriculum draws: one large plain object, so shape is nearly all that varies within
#: a colour and background.
SHAPE_FIRST = {"count": "one", "size": "large", "pattern": "plain"}


def group_labels(combinations: Sequence[dict[str, str]]) -> torch.Tensor:
    """Row ``i``: the index of combination ``i``'s value in each attribute group, in the groups' order."""
    return torch.tensor(
        [[ATTRIBUTE_GROUPS[g].index(values[g]) for g in ATTRIBUTE_GROUPS] for values in combinations]
    )


@dataclass(frozen=True)
class BatchPlan:
    """Which combinations each step draws: ``combinations`` (the allowed ones); during the first
    ``curriculum_steps`` a share of them from a shape-first subset, all at step 0 and falling linearly to
    none (a hard switch from the subset to the whole world sent the loss of the groups the subset holds
    fixed from near 0 to over 20 in the probes)."""

    combinations: tuple[dict[str, str], ...]
    batch_size: int
    seed: int
    curriculum_steps: int = 0

    def shape_first_share(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.curriculum_steps) if self.curriculum_steps else 0.0

    def step_combinations(self, step: int) -> list[dict[str, str]]:
        rng = np.random.default_rng([self.seed, step])
        first = [c for c in self.combinations if all(c[g] == v for g, v in SHAPE_FIRST.items())]
        share = self.shape_first_share(step) if first else 0.0
        from_first = rng.random(self.batch_size) < share
        pools = [first if chosen else self.combinations for chosen in from_first]
        return [pool[int(rng.integers(0, len(pool)))] for pool in pools]

    def images(self, step: int) -> list[Image.Image]:
        start = step * self.batch_size
        return [
            render_combination(values, BACKBONE_TRAIN_SEED, start + i)
            for i, values in enumerate(self.step_combinations(step))
        ]


class RenderBatches(IterableDataset):
    """Steps ``start``…``stop - 1`` of a :class:`BatchPlan` as ``(step, images, labels)``, over workers."""

    def __init__(
        self, plan: BatchPlan, transform: Callable[[Image.Image], torch.Tensor], start: int, stop: int
    ) -> None:
        super().__init__()
        self.plan, self.transform, self.start, self.stop = plan, transform, start, stop

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start + worker, self.stop, workers):
            images = torch.stack([self.transform(image) for image in self.plan.images(step)])
            yield step, images, group_labels(self.plan.step_combinations(step))


def render_loader(
    plan: BatchPlan,
    transform: Callable[[Image.Image], torch.Tensor],
    start: int,
    stop: int,
    workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of steps ``start``…``stop - 1`` in step order, drawn by ``workers`` processes (0: here)."""
    return DataLoader(
        RenderBatches(plan, transform, start, stop),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH_PER_WORKER if workers else None,
        persistent_workers=False,
    )


def rendered_set(
    combinations: Sequence[dict[str, str]],
    per_combination: int,
    seed: int,
    transform: Callable[[Image.Image], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_combination`` renders of each combination with render ``seed`` (a held-out set), transformed,
    with their group labels."""
    combos = [values for values in combinations for _ in range(per_combination)]
    images = [render_combination(values, seed, i % per_combination) for i, values in enumerate(combos)]
    return torch.stack([transform(image) for image in images]), group_labels(combos)
