"""The steps of ``acmr bootstrap`` (:mod:`acmr_core.pipelines.bootstrap` runs and caches them).

Each step is a function of :class:`BootstrapOptions` and the previous steps' outputs: download and unpack the
sources, extract the features of the planned images (in resumable shards, shared out under torchrun), train
and evaluate ACMR on the xlsa17-layout folder, and assemble the bundle from the model that was evaluated.

The step functions are public names of this module because the runner imports them (and the tests patch
them); the entry point for users is :func:`acmr_core.pipelines.bootstrap.bootstrap`.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmr_core.bundle.catalog import ClassCatalog
from acmr_core.bundle.format import save_bundle
from acmr_core.data.archives import unpack_archive
from acmr_core.data.download import DEFAULT_TIMEOUT_S, Fetched, discard_download, fetch, local_source
from acmr_core.data.image_plan import ImagePlan
from acmr_core.data.layouts import DatasetSpec
from acmr_core.data.sources import SOURCES, Source
from acmr_core.data.xlsa17 import ZSLData, load_xlsa17
from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_PLOT_PER_CLASS
from acmr_core.errors import DataError, DownloadError
from acmr_core.features.backbone import Backbone, BackboneIdentity, create_backbone
from acmr_core.features.distributed import Session
from acmr_core.features.extract import FeatureSet, load_features, save_features
from acmr_core.features.sharding import ShardJob, ShardLayout, extract_in_shards, image_list_sha256
from acmr_core.fileio import write_json
from acmr_core.model.saved_model import load_trained
from acmr_core.pipelines.build import (
    LabelledFeatures,
    assemble_bundle,
    backbone_spec_from_identity,
    sample_per_class,
)
from acmr_core.runtime import resolve_device
from acmr_core.training.protocol import run_protocol

log = logging.getLogger(__name__)

#: Images per features shard (rounded up to whole batches); an interrupted extraction resumes at the first
#: unfinished shard, and under torchrun the shards are dealt to the ranks.
SHARD_IMAGES = 2048


@dataclass
class BootstrapOptions:
    """Everything ``acmr bootstrap`` can be told; the defaults reproduce the documented real run."""

    dataset: str
    data_dir: Path = Path("data")
    weights: str = "tv_in1k"
    device: str = "auto"
    out: Path | None = None  # default: checkpoints/<dataset>-<weights>
    checkpoints: Path = CHECKPOINTS_DIR
    epochs: int | None = None  # None: chosen on the validation split (up to the preset's)
    seed: int = 0
    selection: str = "validation"
    batch_size: int = 32
    workers: int = 2
    shard_images: int | None = None  # images per features shard; None: SHARD_IMAGES
    timeout: float = DEFAULT_TIMEOUT_S
    urls: dict[str, str] = field(default_factory=dict)  # source name -> URL or local path override
    progress: bool = True


# ------------------------------------------------------------------------------------------------------------
# 1. sources


def _unpack(fetched: Fetched, url: str, source: Source, options: BootstrapOptions) -> Path:
    """Unpack a fetched archive; a downloaded file that is no archive (an HTML page...) is deleted."""
    try:
        return unpack_archive(
            fetched.path, options.data_dir / "sources" / source.name, progress=options.progress
        )
    except DownloadError as error:
        downloads = (options.data_dir / "downloads").resolve()
        if fetched.path.resolve().parent != downloads or "unsafe archive" in str(error):
            raise
        discard_download(fetched.path)
        raise DownloadError(
            f"{url} did not give a usable {source.filename} ({error}); the download was deleted — "
            f"{source.hint()}"
        ) from None


def source_roots(
    spec: DatasetSpec, options: BootstrapOptions
) -> tuple[dict[str, Path], dict[str, str], dict[str, Any]]:
    """Download and unpack every source; returns unpacked roots, URLs used, and their identities."""
    roots: dict[str, Path] = {}
    urls: dict[str, str] = {}
    identities: dict[str, Any] = {}
    for name in (*spec.sources, "xlsa17"):
        source = SOURCES[name]
        url = source.resolve_url(options.urls.get(name))
        urls[name] = url
        local = local_source(url)
        if local is not None and local.is_dir():
            log.info("%s: using the extracted local copy %s", name, local)
            roots[name] = local
            identities[name] = {"url": url, "directory": str(local.resolve())}
            continue
        log.info("%s: %s (%s) from %s", name, source.what, source.size, url)
        fetched = fetch(
            url,
            options.data_dir / "downloads" / source.filename,
            checksum=source.checksum if url == source.url else None,
            timeout=options.timeout,
            progress=options.progress,
            hint=source.hint(),
        )
        roots[name] = _unpack(fetched, url, source, options)
        digests = fetched.digests or {}
        identities[name] = {"url": url, "size": fetched.size, "sha256": digests.get("sha256")}
    return roots, urls, identities


# ------------------------------------------------------------------------------------------------------------
# 3. features, 5. train, 6. bundle


def chosen_backbone(options: BootstrapOptions) -> Backbone:
    """The chosen backbone (kept in acmr_core.features.backbone's cache, so asking twice costs nothing)."""
    return create_backbone(
        weights=options.weights, device=options.device, seed=options.seed, batch_size=options.batch_size
    )


def extract_features(
    plan: ImagePlan,
    class_names: list[str],
    options: BootstrapOptions,
    work: Path,
    inputs_sha256: str,
    session: Session | None = None,
) -> dict[str, Any] | None:
    """Features of every planned image, in plan order, written as one acmr features file.

    Extraction is the long step (tens of minutes on a CPU), so it runs in shards of :data:`SHARD_IMAGES`
    images, each saved as it completes: an interrupted run resumes at the first missing shard. In a
    distributed ``session`` the shards are shared out between the ranks; rank 0 merges and returns the
    outputs, the other ranks ``None``.
    """

    session = session or Session()
    backbone = session.agreed(lambda: chosen_backbone(options))
    shards = work / f"features.shards-{inputs_sha256[:16]}"
    if session.is_root:
        for stale in work.glob("features.shards-*"):
            if stale != shards:
                shutil.rmtree(stale, ignore_errors=True)  # made for other inputs: never mixed in
    job = ShardJob(
        backbone.identity,
        image_list_sha256(plan.relative_paths, plan.labels, class_names),
        ShardLayout.plan(len(plan.paths), options.batch_size, options.shard_images or SHARD_IMAGES),
    )
    log.info(
        "extracting features of %d images with %s (%d shards)",
        len(plan.paths), backbone.identity.describe(), job.layout.count,
    )  # fmt: skip
    merged = extract_in_shards(
        backbone, plan.paths, job, shards, session, workers=options.workers, progress=options.progress
    )
    if merged is None:
        return None
    features, kept, failures = merged
    if not len(kept):
        raise DataError(f"none of the {len(plan.paths)} images under {plan.images_root} could be read")
    if failures:
        log.warning("%d of %d images could not be read; they leave the split", len(failures), len(plan.paths))
    feature_set = FeatureSet(
        features=features,
        labels=plan.labels[kept],
        image_paths=[plan.relative_paths[index] for index in kept],
        class_names=list(class_names),
        identity=backbone.identity,
        skipped=[{"path": plan.relative_paths[index], "reason": reason} for index, reason in failures],
    )
    written = save_features(work / "features.safetensors", feature_set)
    shutil.rmtree(shards, ignore_errors=True)
    return {
        "file": str(written),
        "identity": backbone.identity.to_dict(),
        "dropped": sorted(index for index, _ in failures),
        "n_features": len(kept),
    }


def extract_features_as_helper(options: BootstrapOptions, work: Path, session: Session) -> None:
    """A rank other than 0: wait for rank 0's sources and plan, then extract its share of the shards."""
    session.agree()  # pairs with rank 0's steps 1-2 (which may take as long as the download)
    order = session.broadcast(None)
    if order is None:
        log.info("%s: the features are up to date; nothing to do here", session.describe())
        return
    plan = ImagePlan.from_json(order["plan"])
    extract_features(plan, list(order["classes"]), options, work, order["sha"], session)
    log.info("%s: its shards are done; rank 0 trains and writes the bundle", session.describe())


def load_feature_matrix(path: Path) -> np.ndarray:
    """The features of an acmr features file as one float32 matrix (step 4 writes it into ``res101.mat``)."""
    return np.asarray(load_features(path).features, dtype=np.float32)


def train_and_evaluate(
    spec: DatasetSpec, data_root: Path, train_dir: Path, options: BootstrapOptions
) -> dict[str, Any]:
    """Step 5: train ACMR on the xlsa17-layout folder and evaluate it once on the test split; the metrics
    (with ``model_dir``, the evaluated model) are also written to ``<train_dir>/metrics.json``."""
    data = load_xlsa17(data_root, spec.xlsa17)
    if options.selection == "validation" and not data.has_validation_split:
        raise DataError(
            f"{spec.xlsa17}: the xlsa17 metadata has no validation split; cannot select without test data"
        )
    shutil.rmtree(train_dir, ignore_errors=True)
    train_dir.mkdir(parents=True)
    metrics = run_protocol(
        data,
        [options.seed],
        preset=spec.preset,
        device=options.device,
        selection=options.selection,
        epochs=options.epochs,
        progress=options.progress,
        save_dir=train_dir,
    )
    metrics["model_dir"] = str(train_dir / f"seed_{options.seed}")
    metrics = json.loads(json.dumps(metrics, default=_json_default))  # plain JSON values, as recorded
    write_json(train_dir / "metrics.json", metrics)  # atomic: never a truncated file
    log.info(
        "%s test: U %.2f S %.2f H %.2f ZSL %.2f",
        spec.xlsa17,
        metrics["U"],
        metrics["S"],
        metrics["H"],
        metrics["zsl_top1"],
    )
    return metrics


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _backbone_spec(identity: dict[str, Any], options: BootstrapOptions) -> dict[str, Any]:
    """How the app recreates the backbone that made the features (a local weights file by absolute path)."""
    weights = options.weights
    if Path(weights).expanduser().is_file():
        weights = str(Path(weights).expanduser().resolve())  # the app must find the file from anywhere
    return backbone_spec_from_identity(
        BackboneIdentity.from_dict(identity), weights=weights, seed=options.seed
    )


def bootstrap_provenance(
    spec: DatasetSpec,
    options: BootstrapOptions,
    plan: ImagePlan,
    urls: dict[str, str],
    source_ids: dict[str, Any],
    features: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """What the bundle records about how it was made: sources, split, backbone, schedule and test metrics."""
    return {
        "made_by": "acmr bootstrap",
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0].endswith("acmr") else None,
        "dataset": spec.xlsa17,
        "split_origin": plan.origin,
        "split_notes": plan.notes,
        "n_images": len(plan.relative_paths),
        "sources": {name: {**source_ids.get(name, {}), "url": url} for name, url in urls.items()},
        # How the app recreates the backbone (Bundle.create_backbone); its identity is in backbone.json.
        "backbone": _backbone_spec(features["identity"], options),
        "epochs": options.epochs,
        "seed": options.seed,
        "selection": options.selection,
        "metrics": {key: metrics.get(key) for key in ("U", "S", "H", "zsl_top1", "H_uncalibrated")},
        "python": platform.python_version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def display_name(xlsa17_name: str) -> str:
    """``002.Laysan_Albatross`` → ``Laysan Albatross``; ``grizzly+bear`` → ``grizzly bear``; ``apse_indoor`` →
    ``apse indoor``."""
    return re.sub(r"\s+", " ", re.sub(r"^\d+\.", "", xlsa17_name).replace("_", " ").replace("+", " ")).strip()


def xlsa17_catalog(data: ZSLData) -> ClassCatalog:
    """The bundle's class catalog: readable names (xlsa17's if they would collide) and the xlsa17 matrix."""

    names = [display_name(name) or name for name in data.class_names]
    if len({name.casefold() for name in names}) != len(names):
        names = list(data.class_names)
    seen = np.isin(np.arange(len(names)), data.seen_classes)
    return ClassCatalog(
        names=tuple(names),
        attribute_names=tuple(data.attribute_names),
        attribute_matrix=data.attributes,
        seen_mask=seen,
        descriptions=tuple(f"{data.dataset} class {name}" for name in data.class_names),
    )


def write_bundle(
    spec: DatasetSpec,
    data_root: Path,
    model_dir: Path,
    features: dict[str, Any],
    bundle_dir: Path,
    provenance: dict[str, Any],
    options: BootstrapOptions,
) -> None:
    """Assemble the bundle from the model that was trained and evaluated (no second training)."""

    data = load_xlsa17(data_root, spec.xlsa17)
    trained = load_trained(model_dir, device=resolve_device(options.device))
    catalog = xlsa17_catalog(data)
    trained.class_names = list(catalog.names)
    # The plot shows a sample of training images of every seen class and test images of every unseen class.
    candidates = np.concatenate([data.trainval, data.test_unseen])
    plotted = sample_per_class(data.labels, DEFAULT_PLOT_PER_CLASS, options.seed, rows=candidates)
    image_ids = data.image_files or [f"image-{i}" for i in range(data.labels.size)]
    plotted_ids = tuple(image_ids[i] for i in plotted)
    bundle = assemble_bundle(
        trained,
        catalog,
        BackboneIdentity.from_dict(features["identity"]),
        training=LabelledFeatures(data.features[data.trainval], data.labels[data.trainval], ()),
        plotted=LabelledFeatures(data.features[plotted], data.labels[plotted], plotted_ids),
        seed=options.seed,
        provenance={"builder": "acmr_core.pipelines.bootstrap", "preset": spec.preset, **provenance},
    )
    save_bundle(bundle, bundle_dir)
