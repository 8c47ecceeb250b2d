"""`acmr extract`: images (a class-folder tree or a list file) → a features file for `acmr bundle`.

Writes one ``.safetensors`` file (features, labels, relative image paths, class names, backbone identity and
the list of skipped images) and, with ``--res101-mat``, the same features in the xlsa17 ``res101.mat``
layout. Unreadable images are skipped with a warning each and counted in the printed summary.

Extraction runs in shards (:mod:`acmr_core.features.sharding`) kept in ``<out stem>.shards/`` until
the features file
is written, so an interrupted run resumes where it stopped; under ``torchrun`` the same command spreads the
shards over every process (:mod:`acmr_core.features.distributed`) and rank 0 writes the one features file.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from acmr_core.commands._args import add_device_option, non_negative_int, positive_int
from acmr_core.errors import ACMRError

if TYPE_CHECKING:  # annotations only: importing these at start-up would load torch
    from acmr_core.features.distributed import Session
    from acmr_core.features.sharding import ShardJob

log = logging.getLogger(__name__)


def _default_workers() -> int:
    # Decoding runs beside the forward pass; leave the main process one core.
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def shards_folder(out: Path) -> Path:
    """Where ``acmr extract --out F`` keeps its shards until ``F`` is written: ``F``'s stem + ``.shards``."""
    return out.with_name(out.stem + ".shards")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract backbone features from an image folder or list file",
        description="Extract 2048-d timm ResNet-101 features from images. --images is a folder whose "
        "sub-folders are the classes, or a text file of 'relative/path [label]' lines (paths relative to "
        "the list file, or to --root). Runs unchanged under torchrun (one shard of the images per process): "
        "torchrun --standalone --nproc_per_node=N -m acmr_core extract ... ; there --device auto or cuda "
        "means cuda:LOCAL_RANK for each process.",
    )
    parser.add_argument("--images", required=True, type=Path, help="image folder or list file")
    parser.add_argument(
        "--weights",
        default="tv_in1k",
        help="timm tag (default tv_in1k: torchvision's ImageNet-1k ResNet-101), a .safetensors/.pth file, "
        "or 'random' (seeded, offline)",
    )
    parser.add_argument("--out", required=True, type=Path, help="features file to write (.safetensors)")
    parser.add_argument("--res101-mat", type=Path, default=None, help="also write an xlsa17 res101.mat here")
    parser.add_argument("--model", default="resnet101", help="timm architecture (default resnet101)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)"
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=_default_workers(),
        help=f"image-decoding worker processes, per process (default {_default_workers()})",
    )
    add_device_option(parser)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads for the forward pass (default: torch's; 1 is faster on a busy machine)",
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="folder the list file's paths are relative to"
    )
    parser.add_argument(
        "--max-pixels", type=positive_int, default=None, help="refuse larger images (default 64 MP)"
    )
    parser.add_argument(
        "--shard-size",
        type=positive_int,
        default=None,
        help="images per shard, rounded up to whole batches: the unit of resuming and of work per process "
        "(default: about 1/64 of the images, at most 2048)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps acmr --help fast
    from acmr_core.features.distributed import ReportedByRoot, distributed_session

    if args.out.suffix != ".safetensors":
        raise ACMRError(f"--out {args.out}: the features file must end in .safetensors")
    if args.res101_mat is not None and args.res101_mat.suffix != ".mat":
        raise ACMRError(f"--res101-mat {args.res101_mat}: the file must end in .mat")
    with distributed_session(args.device) as session:
        try:
            return _extract(args, session)
        except ReportedByRoot as error:
            log.debug("stopping: %s (reported by rank 0)", error)
            return 2


def _extract(args: argparse.Namespace, session: Session) -> int:
    # lazy: keeps acmr --help fast (these load torch)
    import torch

    from acmr_core.data.images import DEFAULT_MAX_PIXELS
    from acmr_core.features.backbone import create_backbone
    from acmr_core.features.extract import feature_set_of, find_images, save_features, write_res101_mat
    from acmr_core.features.sharding import ShardJob, ShardLayout, extract_in_shards, image_list_sha256

    images = session.agreed(lambda: find_images(args.images, args.root))
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = session.agreed(
        lambda: create_backbone(
            args.weights,
            model_name=args.model,
            device=session.device(args.device),
            seed=args.seed,
            batch_size=args.batch_size,
        )
    )
    job = ShardJob(
        backbone.identity,
        image_list_sha256(images.paths, images.labels, images.class_names),
        ShardLayout.plan(len(images.paths), args.batch_size, args.shard_size),
    )
    rank0_job = session.broadcast(job.to_dict())
    session.agreed(lambda: _ensure_same_job(job, rank0_job, session))
    folder = shards_folder(args.out)
    merged = extract_in_shards(
        backbone,
        images.absolute_paths(),
        job,
        folder,
        session,
        workers=args.workers,
        progress=not args.no_progress,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
    )
    if merged is None:  # not rank 0: its shards are written, rank 0 merged them
        return 0
    feature_set = feature_set_of(images, backbone.identity, *merged)
    save_features(args.out, feature_set)
    written = [str(args.out)]
    if args.res101_mat is not None:
        written.append(str(write_res101_mat(args.res101_mat, feature_set)))
    shutil.rmtree(folder, ignore_errors=True)  # everything in it is in the features file now
    skipped = len(feature_set.skipped)
    print(
        f"extracted {len(feature_set)} of {len(images.paths)} images "
        f"({len(feature_set.class_names)} classes, "
        f"{feature_set.features.shape[1]}-d, {backbone.identity.describe()}); "
        f"skipped {skipped} unreadable image{'s' if skipped != 1 else ''}; wrote {', '.join(written)}"
        + (f" ({session.world_size} processes)" if session.is_distributed else "")
    )
    return 0


def _ensure_same_job(job: ShardJob, rank0_job: dict, session: Session) -> None:
    """Every rank must see the same images and the same backbone as rank 0 (on every node)."""
    if job.to_dict() == rank0_job:
        return
    raise ACMRError(
        f"{session.describe()} on {socket.gethostname()} sees {job.layout.n_images} images "
        f"(sha256 {job.images_sha256[:12]}…) with {job.identity.describe()}, rank 0 sees "
        f"{rank0_job['n_images']} (sha256 {rank0_job['images_sha256'][:12]}…); every node needs the same "
        "--images and --weights"
    )
