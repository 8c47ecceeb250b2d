"""The loop that trains the demo backbone's learnt part: renders from worker processes, bf16 autocast and
channels-last on CUDA, and a checkpoint every few minutes so that a stopped run resumes where it was.

A checkpoint is one safetensors file (no pickle): the tensors training changed, the heads, the optimiser's
state, and in its header the step, the loss history and the cache key of the settings it belongs to. A run
resumed from it continues bit for bit as the uninterrupted run would on the same device (the batches are a
pure function of the step, :mod:`acmr_core.pipelines.backbone_renders`; the schedule one of the step,
:func:`~acmr_core.pipelines.backbone_training.learning_rate_factor`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from acmr_core.data.demo_render import ATTRIBUTE_GROUPS
from acmr_core.features.backbone import eval_transform
from acmr_core.pipelines.backbone_renders import BatchPlan, render_loader, rendered_set
from acmr_core.pipelines.backbone_training import (
    BackboneTraining,
    make_optimiser,
    select_trainable,
    set_learning_rate,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "acmr-backbone-checkpoint"
#: Steps over which the logged losses are averaged (reading a loss syncs the GPU, so not every step).
LOG_EVERY = 25


class BackboneTrainer:
    """The network with only the chosen parameters trainable, one linear head per attribute group (the heads
    read each group from the pooled features and are thrown away after training)."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: BackboneTraining,
        device: torch.device,
        channels_last: bool | None = None,
    ) -> None:
        """``channels_last`` (default: on CUDA, where bf16 convolutions run fastest in it) trains in that
        memory format; what is saved is the same contiguous float32 either way."""
        self.config, self.device = config, device
        self.channels_last = device.type == "cuda" if channels_last is None else channels_last
        self.model = model.to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The eval transform, exactly as extraction and uploads will see the images.
        _, self.transform = eval_transform(model, config.input_size)
        self.groups = list(ATTRIBUTE_GROUPS)
        self.parameters = select_trainable(self.model, config.trainable)
        generator = torch.Generator().manual_seed(config.seed)
        features = int(getattr(model, "num_features", 2048))
        self.heads = torch.nn.ModuleList(
            [torch.nn.Linear(features, len(ATTRIBUTE_GROUPS[g])) for g in self.groups]
        )
        for head in self.heads:  # seeded, so a rerun trains the same heads
            torch.nn.init.normal_(head.weight, std=0.01, generator=generator)
            torch.nn.init.zeros_(head.bias)
        self.heads.to(device)
        self.weights = torch.tensor(
            [config.shape_weight if g == "shape" else 1.0 for g in self.groups], device=device
        )
        self.optimiser = make_optimiser(config, self.parameters, list(self.heads.parameters()))
        self.step = 0
        #: ``[step, mean total loss, mean loss of each group...]`` every :data:`LOG_EVERY` steps.
        self.history: list[list[float]] = []
        self.images_per_s = 0.0
        self.data_wait_s = 0.0

    # ------------------------------------------------------------------------------------------- training

    def fit(
        self,
        combinations: Sequence[dict[str, str]],
        *,
        workers: int = 0,
        checkpoint: Path | None = None,
        key: str = "",
        checkpoint_every_s: float = 300.0,
        time_limit_s: float | None = None,
        stop_at: int | None = None,
        progress: bool = True,
    ) -> bool:
        """Train from :attr:`step` on; ``True`` once every step ran. With ``time_limit_s`` (or ``stop_at``, a
        step) it stops early and returns ``False`` after writing ``checkpoint`` (when given), which a later
        call resumes from (:meth:`resume`)."""
        config = self.config
        plan = BatchPlan(tuple(combinations), config.batch_size, config.seed, config.curriculum_steps)
        stop = min(config.steps, stop_at if stop_at is not None else config.steps)
        repeats = config.repeats
        loader = render_loader(plan, self.transform, self.step // repeats, -(-stop // repeats), workers,
                               self.device.type == "cuda")  # fmt: skip
        started = last_save = time.monotonic()
        window = torch.zeros(len(self.groups) + 1, device=self.device)
        first = window_start = self.step  # a resumed run's first window starts where it resumed
        self.model.train()
        bar = tqdm(total=stop - first, desc="demo backbone", unit="step", disable=not progress)
        for images, labels in self._step_batches(loader, stop):
            window += self._train_step(images, labels)
            self.step += 1
            if self.step % LOG_EVERY == 0 or self.step == stop:
                self._log(window, bar, self.step - window_start)
                window.zero_()
                window_start = self.step
            bar.update(1)
            now = time.monotonic()
            out_of_time = time_limit_s is not None and now - started >= time_limit_s
            if checkpoint is not None and (now - last_save >= checkpoint_every_s or out_of_time):
                self.save_checkpoint(checkpoint, key)
                last_save = now
            if out_of_time:
                break
        bar.close()
        elapsed = max(time.monotonic() - started, 1e-9)
        self.images_per_s = (self.step - first) * config.batch_size / elapsed
        self.model.eval()
        finished = self.step >= config.steps
        if not finished and checkpoint is not None:
            self.save_checkpoint(checkpoint, key)
        return finished

    def _step_batches(
        self, loader: Iterable[tuple[int, torch.Tensor, torch.Tensor]], stop: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The images and labels of each step from :attr:`step` to ``stop`` on the device: each rendered batch
        serves ``repeats`` consecutive steps, each under its own flips and quarter turns (which change no
        attribute of a render), so a GPU faster than the renderers trains on more than they draw."""
        repeats = self.config.repeats
        waited = time.monotonic()
        for index, images, labels in loader:
            self.data_wait_s += time.monotonic() - waited
            if index != self.step // repeats:  # the loader's order is the reproducibility guarantee
                raise RuntimeError(
                    f"render batches out of order: got {index}, expected {self.step // repeats}"
                )
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            while self.step < stop and self.step // repeats == index:
                yield (dihedral(images, self.config.seed, self.step) if repeats > 1 else images), labels
            waited = time.monotonic()

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        set_learning_rate(self.optimiser, self.config, self.step)
        with self._autocast():
            features = self.model(images)
        losses = torch.stack(
            [
                torch.nn.functional.cross_entropy(head(features.float()), labels[:, k])
                for k, head in enumerate(self.heads)
            ]
        )
        loss = (losses.float() * self.weights).sum()
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return torch.cat([loss.detach()[None], losses.detach().float()])

    def _log(self, window: torch.Tensor, bar: tqdm, count: int) -> None:
        """Log the mean losses of the ``count`` steps summed in ``window``."""
        means = [round(float(v) / count, 4) for v in window.cpu()]
        self.history.append([float(self.step), *means])
        shape = means[1 + self.groups.index("shape")]
        bar.set_postfix(loss=f"{means[0]:.2f}", shape=f"{shape:.3f}")
        log.info("demo backbone step %d: loss %.3f, shape %.3f", self.step, means[0], shape)

    # ------------------------------------------------------------------------------------------- reading

    @torch.inference_mode()
    def accuracy(
        self, combinations: Sequence[dict[str, str]], per_combination: int, seed: int
    ) -> dict[str, float]:
        """Per-group accuracy (%) of the heads on ``per_combination`` renders of each combination with
        render ``seed``, in eval mode."""
        self.model.eval()
        images, labels = rendered_set(combinations, per_combination, seed, self.transform)
        correct = torch.zeros(len(self.groups))
        for start in range(0, len(images), self.config.batch_size):
            batch = images[start : start + self.config.batch_size].to(self.device)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                features = self.model(batch).float()
            truth = labels[start : start + self.config.batch_size]
            for k, head in enumerate(self.heads):
                correct[k] += (head(features).argmax(1).cpu() == truth[:, k]).sum()
        return {g: round(100.0 * float(correct[k]) / len(images), 1) for k, g in enumerate(self.groups)}

    def learnt_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor training changed: the trainable parameters and all BatchNorm running statistics,
        as contiguous CPU float32 (whatever device or memory format they were trained in)."""
        trainable = {id(p) for p in self.parameters}
        changed = {n: p for n, p in self.model.named_parameters() if id(p) in trainable}
        for name, buffer in self.model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                changed[name] = buffer
        return {name: _portable(t) for name, t in sorted(changed.items())}

    # ------------------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, path: Path, key: str) -> Path:
        """Write what a resumed run needs, atomically (a crash mid-write leaves the previous checkpoint)."""
        from safetensors.torch import save_file

        tensors = {f"model.{n}": t for n, t in self.learnt_tensors().items()}
        tensors.update({f"heads.{n}": _portable(t) for n, t in self.heads.state_dict().items()})
        state = self.optimiser.state_dict()
        for index, values in state["state"].items():
            for name, value in values.items():
                tensors[f"optim.{index}.{name}"] = _portable(torch.as_tensor(value))
        metadata = {
            "format": CHECKPOINT_FORMAT,
            "key": key,
            "step": str(self.step),
            "history": json.dumps(self.history),
            "param_groups": json.dumps(state["param_groups"]),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, path)
        log.info("demo backbone: checkpoint at step %d (%s)", self.step, path)
        return path

    def resume(self, path: Path, key: str) -> bool:
        """Continue from ``path`` when it is a checkpoint of these settings (``key``); ``False`` otherwise."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.is_file():
            return False
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != CHECKPOINT_FORMAT or metadata.get("key") != key:
            log.warning("demo backbone: %s is a checkpoint of other settings; starting afresh", path)
            return False
        tensors = load_file(str(path))
        model_state = self.model.state_dict()
        heads_state = self.heads.state_dict()
        optimiser_state: dict[int, dict[str, torch.Tensor]] = {}
        with torch.no_grad():
            for name, tensor in tensors.items():
                kind, _, rest = name.partition(".")
                if kind == "model":
                    model_state[rest].copy_(tensor)
                elif kind == "heads":
                    heads_state[rest].copy_(tensor)
                else:
                    index, _, field = rest.partition(".")
                    optimiser_state.setdefault(int(index), {})[field] = tensor
        # load_state_dict puts each moment on its parameter's device and dtype (the step stays on the CPU)
        self.optimiser.load_state_dict(
            {"state": optimiser_state, "param_groups": json.loads(metadata["param_groups"])}
        )
        self.step = int(metadata["step"])
        self.history = json.loads(metadata["history"])
        log.info("demo backbone: resumed at step %d from %s", self.step, path)
        return True

    def _autocast(self) -> AbstractContextManager:
        if self.device.type != "cuda":
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def dihedral(images: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """Each image of a batch under one of the 8 flips and quarter turns of the square, drawn from a generator
    seeded with (``seed``, ``step``): a pure function of the step, like the batches themselves."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    choice = torch.randint(0, 8, (len(images),), generator=generator).to(images.device)
    out = torch.empty_like(images)
    for k in range(8):
        picked = choice == k
        view = images[picked].flip(-1) if k >= 4 else images[picked]
        out[picked] = torch.rot90(view, k % 4, dims=(-2, -1))
    return out


def _portable(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous, CPU float32 copy: what a file holds whatever the device and memory format."""
    return tensor.detach().to("cpu", torch.float32).contiguous()
