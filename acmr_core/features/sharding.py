"""Feature extraction in shards: resumable, and spread over the ranks of a torchrun job.

The image list is cut into shards of whole batches (:class:`ShardLayout`): shard ``k`` holds images
``[k·s, (k+1)·s)``, ``s`` a multiple of the batch size. So every batch of a sharded run holds exactly the
images that batch holds in a one-process run, and on CPU the features are bit-identical however many
processes run (a convolution's last bits can depend on how many images share its batch: that never changes).

Each shard is written to ``<folder>/<k:05d>.safetensors`` (atomically) as soon as it is complete, and records
the job it belongs to (:class:`ShardJob`: backbone identity, a hash of the image list, the layout); rank 0
also writes the job to ``<folder>/job.json``. A run first looks at what is there: finished shards of the same
job are kept, anything made for another job is refused with a one-line message (never mixed in, never
silently deleted). The unfinished shards are dealt round-robin to the ranks; when all ranks are done, rank 0
checks that every shard is there and belongs to the job, and merges them in order (:func:`merge_shards`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from acmr_core.data.images import DEFAULT_MAX_PIXELS
from acmr_core.errors import ACMRError, DataError
from acmr_core.features.backbone import Backbone, BackboneIdentity
from acmr_core.features.distributed import JobProgress, Session
from acmr_core.features.extract import canonical_safetensors, extract_paths
from acmr_core.fileio import atomic_write, json_sha256, write_json

log = logging.getLogger(__name__)

SHARD_FORMAT = 1
#: Most images per shard when none is asked for: what a killed rank can lose, and the unit of work dealt to
#: the ranks. 2048 ResNet-101 images are ~1 min on a GPU, ~15 min on a laptop CPU.
DEFAULT_SHARD_IMAGES = 2048
#: Smaller lists get about this many shards by default, so that up to a few dozen ranks all have work.
DEFAULT_SHARD_COUNT = 64
JOB_FILE = "job.json"
_SHARD_NAME = re.compile(r"^(\d{5,})\.safetensors$")

Failures = list[tuple[int, str]]


class ShardMismatchError(DataError):
    """A shard folder holds shards of another job, or not all of them."""


@dataclass(frozen=True)
class ShardLayout:
    """How ``n_images`` images are cut into shards of ``shard_images`` (a multiple of ``batch_size``)."""

    n_images: int
    batch_size: int
    shard_images: int

    @classmethod
    def plan(cls, n_images: int, batch_size: int, shard_images: int | None = None) -> ShardLayout:
        """Shards of ``shard_images`` rounded up to whole batches; by default about
        :data:`DEFAULT_SHARD_COUNT` shards of at most :data:`DEFAULT_SHARD_IMAGES`. The layout depends on the
        list and the batch size only, never on the number of processes, so a rerun with more or fewer
        processes reuses every finished shard."""
        if shard_images is None:
            shard_images = min(DEFAULT_SHARD_IMAGES, math.ceil(n_images / DEFAULT_SHARD_COUNT))
        whole_batches = max(1, math.ceil(shard_images / batch_size)) * batch_size
        return cls(n_images=n_images, batch_size=batch_size, shard_images=whole_batches)

    @property
    def count(self) -> int:
        return math.ceil(self.n_images / self.shard_images)

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.shard_images
        return start, min(start + self.shard_images, self.n_images)


def image_list_sha256(relative_paths: Sequence[str], labels: np.ndarray, class_names: Sequence[str]) -> str:
    """What identifies the image list of a job: paths in order, their labels and the class names."""
    content = {
        "paths": list(relative_paths),
        "labels": np.asarray(labels, dtype=np.int64).tolist(),
        "class_names": list(class_names),
    }
    return json_sha256(content)


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one extraction must agree on."""

    identity: BackboneIdentity
    images_sha256: str
    layout: ShardLayout

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SHARD_FORMAT,
            "backbone": self.identity.to_dict(),
            "images_sha256": self.images_sha256,
            "n_images": self.layout.n_images,
            "batch_size": self.layout.batch_size,
            "shard_images": self.layout.shard_images,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ShardJob:
        if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
            raise DataError(f"not an acmr shard job record (format {SHARD_FORMAT})")
        try:
            layout = ShardLayout(int(data["n_images"]), int(data["batch_size"]), int(data["shard_images"]))
            return cls(BackboneIdentity.from_dict(data["backbone"]), str(data["images_sha256"]), layout)
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"damaged shard job record ({type(error).__name__}: {error})") from None

    def ensure_matches(self, found: ShardJob, where: str, folder: Path) -> None:
        """Raise :class:`ShardMismatchError` (one line) unless ``found`` (read at ``where``) is this job."""
        start_over = f"remove {folder} to start over"
        differing = self.identity.differences(found.identity)
        if differing:
            raise ShardMismatchError(
                f"{where} was made with another backbone ({', '.join(differing)} differ: "
                f"{found.identity.describe()}, this run {self.identity.describe()}); "
                f"rerun with the --weights/--model/--seed it was made with, or {start_over}"
            )
        if found.images_sha256 != self.images_sha256 or found.layout.n_images != self.layout.n_images:
            raise ShardMismatchError(
                f"{where} was made for another image list ({found.layout.n_images} images, sha256 "
                f"{found.images_sha256[:12]}…; this run {self.layout.n_images} images, "
                f"{self.images_sha256[:12]}…); rerun with the images it was made for, or {start_over}"
            )
        if found.layout != self.layout:
            raise ShardMismatchError(
                f"{where} was made with --batch-size {found.layout.batch_size} and "
                f"{found.layout.shard_images}-image shards (this run: {self.layout.batch_size}, "
                f"{self.layout.shard_images}); rerun with those, or {start_over}"
            )


@dataclass
class Shard:
    """The features of one shard; ``kept`` and ``failures`` hold indices into the whole image list."""

    index: int
    features: np.ndarray
    kept: np.ndarray
    failures: Failures


# ------------------------------------------------------------------------------------------------ files


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"{index:05d}.safetensors"


def write_shard(folder: Path, job: ShardJob, shard: Shard) -> Path:
    """Save ``shard`` atomically: a shard file exists only once it is complete."""
    metadata = {
        "acmr_features_shard": str(SHARD_FORMAT),
        "job": json.dumps(job.to_dict()),
        "index": str(shard.index),
        "failures": json.dumps(shard.failures),
    }
    tensors = {
        "features": np.ascontiguousarray(shard.features, dtype=np.float32),
        "kept": np.ascontiguousarray(shard.kept, dtype=np.int64),
    }
    path = shard_path(folder, shard.index)
    atomic_write(path, canonical_safetensors(safetensors.numpy.save(tensors, metadata=metadata)))
    return path


def _read_shard_header(path: Path) -> tuple[ShardJob, int]:
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("acmr_features_shard") != str(SHARD_FORMAT):
            raise DataError("not an acmr features shard")
        return ShardJob.from_dict(json.loads(metadata["job"])), int(metadata["index"])
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise DataError(f"{path} is not a readable features shard ({error})") from None


def read_shard(path: Path) -> tuple[ShardJob, Shard]:
    """A shard file's job and content; :class:`DataError` when it is unreadable."""
    job, index = _read_shard_header(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            failures = [(int(i), str(reason)) for i, reason in json.loads(handle.metadata()["failures"])]
            features, kept = handle.get_tensor("features"), handle.get_tensor("kept")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not a readable features shard ({error})") from None
    return job, Shard(index, features, kept.astype(np.int64), failures)


def _check_against(job: ShardJob, path: Path, folder: Path) -> int:
    """The index of the shard at ``path`` after checking it belongs to ``job``."""
    found, index = _read_shard_header(path)
    job.ensure_matches(found, str(path), folder)
    match = _SHARD_NAME.match(path.name)
    if match is None or int(match.group(1)) != index or index >= job.layout.count:
        raise ShardMismatchError(
            f"{path} does not fit this job's {job.layout.count} shards; remove {folder} to start over"
        )
    return index


def finished_shards(folder: Path, job: ShardJob) -> set[int]:
    """Indices of the complete shards of ``job`` in ``folder``; refuses shards of another job.

    An unreadable shard counts as unfinished (it is extracted and written again); leftovers of a write that
    was killed midway (``.*.tmp``) are removed.
    """
    if not folder.is_dir():
        return set()
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    record = folder / JOB_FILE
    if record.is_file():
        try:
            recorded = ShardJob.from_dict(json.loads(record.read_text()))
        except (OSError, ValueError, DataError):
            raise ShardMismatchError(f"{record} is damaged; remove {folder} to start over") from None
        job.ensure_matches(recorded, str(record), folder)
    done: set[int] = set()
    for path in sorted(folder.glob("*.safetensors")):
        try:
            done.add(_check_against(job, path, folder))
        except ShardMismatchError:
            raise
        except DataError as error:
            log.warning("%s; its images are extracted again", error)
    return done


def merge_shards(folder: Path, job: ShardJob) -> tuple[np.ndarray, np.ndarray, Failures]:
    """``(features, kept, failures)`` of the whole job from its shards, in image order.

    Refuses (:class:`ShardMismatchError`, one line) when a shard is missing or incomplete, or belongs to
    another job.
    """
    layout = job.layout
    missing = [index for index in range(layout.count) if not shard_path(folder, index).is_file()]
    if missing:
        raise ShardMismatchError(
            f"{folder}: {len(missing)} of {layout.count} shards are missing ({_ranges(missing)}); "
            "rerun the same command to extract them"
        )
    chunks, kept, failures = [], [], []
    for index in range(layout.count):
        path = shard_path(folder, index)
        found, shard = read_shard(path)
        job.ensure_matches(found, str(path), folder)
        start, stop = layout.bounds(index)
        settled = sorted([*shard.kept.tolist(), *(i for i, _ in shard.failures)])
        complete = settled == list(range(start, stop)) and len(shard.features) == len(shard.kept)
        if shard.index != index or not complete:
            raise ShardMismatchError(
                f"{path} does not hold exactly images {start}..{stop - 1}; remove it and rerun to extract it"
            )
        chunks.append(shard.features)
        kept.append(shard.kept)
        failures.extend(shard.failures)
    return np.concatenate(chunks), np.concatenate(kept), failures


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"shards 0-2, 5"`` (first ten runs)."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:10])
    return f"shard{'s' if len(indices) > 1 else ''} {text}{', …' if len(runs) > 10 else ''}"


# ------------------------------------------------------------------------------------------------ the run


def extract_in_shards(
    backbone: Backbone,
    paths: Sequence[Path],
    job: ShardJob,
    folder: Path,
    session: Session | None = None,
    workers: int = 0,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray, Failures] | None:
    """Extract every unfinished shard of ``job`` on this rank's share, then merge on rank 0.

    Collective in a distributed ``session`` (every rank calls it with the same job). Returns rank 0's merged
    ``(features, kept, failures)`` (as :func:`acmr_core.features.extract.extract_paths`, over the
    whole list) and
    ``None`` on the other ranks. Finished shards stay in ``folder``; the caller removes it once it has saved
    the result.
    """
    session = session or Session()
    layout = job.layout
    if len(paths) != layout.n_images:
        raise ValueError(f"{len(paths)} paths for a job of {layout.n_images} images")
    todo = session.broadcast(session.agreed(lambda: _prepare(folder, job) if session.is_root else None))
    session.agreed(lambda: None if session.is_root else _check_shared(folder, job, session))
    settled_before = layout.n_images - sum(_size(layout, index) for index in todo)
    if session.is_root:
        log.info(
            "%d images in %d shards of %d: %d done earlier, %d to extract on %d process(es)",
            layout.n_images, layout.count, layout.shard_images,
            layout.count - len(todo), len(todo), session.world_size,
        )  # fmt: skip
    mine = todo[session.rank :: session.world_size]
    bar = JobProgress(session, layout.n_images, settled_before, enabled=progress)
    started, images = time.perf_counter(), 0
    try:
        for number, index in enumerate(mine, 1):
            images += _extract_one(backbone, paths, job, folder, index, workers, max_pixels, bar.add)
            _log_throughput(session, f"shard {index} done ({number} of its {len(mine)})", images, started)
    except BaseException:
        bar.close(failed=True)
        raise
    if mine:  # before close(), which waits for the other ranks: this is this rank's own throughput
        _log_throughput(session, "finished its shards", images, started)
    bar.close()
    return session.agreed(lambda: merge_shards(folder, job) if session.is_root else None)


def _size(layout: ShardLayout, index: int) -> int:
    start, stop = layout.bounds(index)
    return stop - start


def _prepare(folder: Path, job: ShardJob) -> list[int]:
    """Rank 0: check what ``folder`` holds, record the job, and return the shards left to extract."""
    done = finished_shards(folder, job)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / JOB_FILE, job.to_dict())
    return [index for index in range(job.layout.count) if index not in done]


def _check_shared(folder: Path, job: ShardJob, session: Session) -> None:
    """Other ranks: the shards folder rank 0 prepared must be visible here (a filesystem all nodes share)."""
    record = folder / JOB_FILE
    try:
        same = ShardJob.from_dict(json.loads(record.read_text())) == job
    except (OSError, ValueError, DataError):
        same = False
    if not same:
        raise ACMRError(
            f"{session.describe()} on {socket.gethostname()} does not see {record} that rank 0 wrote: "
            "the output folder must be on a filesystem every node shares (and --images the same on all)"
        )


def _extract_one(
    backbone: Backbone,
    paths: Sequence[Path],
    job: ShardJob,
    folder: Path,
    index: int,
    workers: int,
    max_pixels: int,
    on_batch: Callable[[int], None],
) -> int:
    start, stop = job.layout.bounds(index)
    features, kept, failures = extract_paths(
        backbone,
        paths[start:stop],
        batch_size=job.layout.batch_size,
        workers=workers,
        progress=False,
        max_pixels=max_pixels,
        on_batch=on_batch,
    )
    shard = Shard(index, features, kept + start, [(start + i, reason) for i, reason in failures])
    write_shard(folder, job, shard)
    if failures:
        log.info("shard %d: %d unreadable image(s) skipped", index, len(failures))
    return stop - start


def _log_throughput(session: Session, what: str, images: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    log.info(
        "%s: %s; %d images in %.1f s, %.2f images/s",
        session.describe(), what, images, elapsed, images / max(elapsed, 1e-9),
    )  # fmt: skip
