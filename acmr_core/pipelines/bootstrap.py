"""One command from download to a served bundle: CUB, AwA2 and SUN on a timm backbone.

:func:`bootstrap` runs these steps, each cached by a small JSON state file (``<work>/state/<step>.json``) that
records a hash of the step's inputs and the outputs it made; a rerun skips every step whose inputs are
unchanged and whose outputs still exist:

1. ``sources``  — download (resumable, checksummed where published) and extract each archive the dataset needs
   plus ``xlsa17.zip`` (:mod:`acmr_core.data.download`, :mod:`acmr_core.data.sources`).
2. ``plan``     — exactly the images of the xlsa17 split, in xlsa17 order (``res101.mat`` ``image_files``), or
   the split rebuilt from the class lists when ``res101.mat`` is absent (said in the log and the provenance).
3. ``features`` — features of those images with the chosen backbone (:mod:`acmr_core.features.extract`).
4. ``dataset``  — an xlsa17-layout folder (our ``res101.mat`` + ``att_splits.mat`` + names) that
   :func:`acmr_core.data.xlsa17.load_xlsa17` reads, so training is exactly ``acmr train`` on it.
5. ``train``    — ACMR with validation-based selection, evaluated once on the test split (U, S, H, ZSL top-1).
6. ``bundle``   — a bundle under ``checkpoints/<dataset>-<weights>/`` that the app lists.

Folders under ``--data-dir``: ``downloads/`` (archives), ``sources/<name>/`` (extracted, shared between runs),
``work/<dataset>-<weights>/`` (plan, features, dataset folder, training output, state).

Under torchrun (``torchrun --nproc_per_node=N -m acmr_core bootstrap cub``) rank 0 runs every step and the
other ranks join for the ``features`` step only: they wait for rank 0's plan, extract their share of the
shards (:mod:`acmr_core.features.sharding`) and exit; rank 0 merges, trains and writes the bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
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

from acmr_core.data.download import DEFAULT_TIMEOUT_S, Fetched, extract_archive, fetch, local_source
from acmr_core.data.sources import (
    SOURCES,
    DatasetSpec,
    ImagePlan,
    Source,
    get_dataset,
    load_xlsa17_meta,
    plan_images,
    write_xlsa17_folder,
)
from acmr_core.errors import DataError, DownloadError
from acmr_core.features.distributed import Session

log = logging.getLogger(__name__)

STATE_FORMAT = 1
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
#: Images per features shard (rounded up to whole batches); an interrupted extraction resumes at the first
#: unfinished shard, and under torchrun the shards are dealt to the ranks.
SHARD_IMAGES = 2048
STEPS = ("sources", "plan", "features", "dataset", "train", "bundle")


@dataclass
class BootstrapOptions:
    """Everything ``acmr bootstrap`` can be told; the defaults reproduce the documented real run."""

    dataset: str
    data_dir: Path = Path("data")
    weights: str = "tv_in1k"
    device: str = "auto"
    out: Path | None = None  # default: checkpoints/<dataset>-<weights>
    checkpoints: Path = Path("checkpoints")
    epochs: int | None = None  # None: chosen on the validation split (up to the preset's)
    seed: int = 0
    selection: str = "validation"
    batch_size: int = 32
    workers: int = 2
    shard_images: int | None = None  # images per features shard; None: SHARD_IMAGES
    timeout: float = DEFAULT_TIMEOUT_S
    urls: dict[str, str] = field(default_factory=dict)  # source name -> URL or local path override
    progress: bool = True


@dataclass
class BootstrapResult:
    bundle_dir: Path
    metrics: dict[str, Any]
    plan_origin: str
    n_images: int
    skipped_steps: list[str]
    work_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step of this run


# ------------------------------------------------------------------------------------------------------------
# Step cache


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _json_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class StepCache:
    """``<folder>/<step>.json``: the hash of a step's inputs and the outputs it produced."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}
        self._lap_started = time.perf_counter()

    def lap(self, step: str) -> float:
        """Wall seconds since the previous lap, recorded under ``step``."""
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._lap_started
        self._lap_started = now
        return self.seconds[step]

    def _path(self, step: str) -> Path:
        return self.folder / f"{step}.json"

    def done(self, step: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The recorded outputs when ``step`` already ran on these inputs and its output files still exist."""
        try:
            state = json.loads(self._path(step).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("inputs_sha256") != _json_hash(inputs):
            return None
        outputs = state.get("outputs", {})
        if not all(Path(path).exists() for path in state.get("output_paths", [])):
            return None
        log.info("step %s: up to date, skipped", step)
        self.skipped.append(step)
        self.lap(step)
        return outputs

    def record(self, step: str, inputs: dict[str, Any], outputs: dict[str, Any], paths: list[Path]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "format": STATE_FORMAT,
            "step": step,
            "seconds": round(self.lap(step), 3),
            "inputs": inputs,
            "inputs_sha256": _json_hash(inputs),
            "outputs": outputs,
            "output_paths": [str(path) for path in paths],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = self._path(step).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, default=str))
        tmp.replace(self._path(step))

    def invalidate_after(self, step: str) -> None:
        """Forget every step after ``step`` (their inputs changed)."""
        for later in STEPS[STEPS.index(step) + 1 :]:
            self._path(later).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------------
# Helpers


def weights_slug(weights: str) -> str:
    """A folder-name-safe tag for the weights: ``random``, ``tv_in1k``, or a local file's stem."""
    looks_like_file = "/" in weights or "\\" in weights or weights.endswith(WEIGHT_FILE_SUFFIXES)
    candidate = Path(weights).stem if looks_like_file else weights
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", candidate).strip("_") or "weights"


def _weights_key(weights: str) -> dict[str, Any]:
    """What identifies the weights without loading them (a local file: its size and mtime)."""
    path = Path(weights).expanduser()
    if path.is_file():
        stat = path.stat()
        return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"tag": weights}


def _extract(fetched: Fetched, url: str, source: Source, options: BootstrapOptions) -> Path:
    """Unpack a fetched archive; a downloaded file that is no archive (an HTML page...) is deleted."""
    try:
        return extract_archive(
            fetched.path, options.data_dir / "sources" / source.name, progress=options.progress
        )
    except DownloadError as error:
        downloads = (options.data_dir / "downloads").resolve()
        if fetched.path.resolve().parent != downloads or "unsafe archive" in str(error):
            raise
        fetched.path.unlink(missing_ok=True)
        fetched.path.with_name(fetched.path.name + ".download.json").unlink(missing_ok=True)
        raise DownloadError(
            f"{url} did not give a usable {source.filename} ({error}); the download was deleted — "
            f"{source.hint()}"
        ) from None


def _source_roots(
    spec: DatasetSpec, options: BootstrapOptions
) -> tuple[dict[str, Path], dict[str, str], dict[str, Any]]:
    """Download and extract every source; returns extracted roots, URLs used, and their identities."""
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
        roots[name] = _extract(fetched, url, source, options)
        digests = fetched.digests or {}
        identities[name] = {"url": url, "size": fetched.size, "sha256": digests.get("sha256")}
    return roots, urls, identities


# ------------------------------------------------------------------------------------------------------------
# The pipeline


def bootstrap(options: BootstrapOptions, session: Session | None = None) -> BootstrapResult | None:
    """Run (or resume) the whole pipeline for ``options.dataset``; see the module docstring.

    In a distributed ``session`` (torchrun) every rank calls it; only rank 0 returns a result.
    """
    session = session or Session()
    options = dataclasses.replace(options, device=session.device(options.device))
    spec = get_dataset(options.dataset)
    slug = weights_slug(options.weights)
    work = options.data_dir / "work" / f"{spec.key}-{slug}"
    if not session.is_root:
        _extract_features_as_helper(options, work, session)
        return None
    cache = StepCache(work / "state")
    started = time.perf_counter()

    # 1.-2. sources and plan on rank 0; the other ranks wait for the plan (or hear about a failure)
    urls, source_ids, meta, layout, plan_path, plan = session.agreed(
        lambda: _sources_and_plan(spec, options, work, cache)
    )

    # 3. features
    features_inputs = {
        "plan_sha256": file_sha256(plan_path),
        "weights": _weights_key(options.weights),
        "backbone_seed": options.seed,
    }
    features_outputs = cache.done("features", features_inputs)
    inputs_sha256 = _json_hash(features_inputs)
    order = {"plan": plan.to_json(), "classes": meta.class_names, "sha": inputs_sha256}
    session.broadcast(None if features_outputs else order)  # what the other ranks extract, if anything
    if features_outputs is None:
        cache.invalidate_after("features")
        features_outputs = _extract_features(plan, meta.class_names, options, work, inputs_sha256, session)
        assert features_outputs is not None  # rank 0 always merges
        cache.record("features", features_inputs, features_outputs, [Path(features_outputs["file"])])
    if features_outputs.get("dropped"):
        plan = plan.drop(np.asarray(features_outputs["dropped"], dtype=np.int64))

    # 4. dataset folder in the xlsa17 layout
    data_root = work / "xlsa17"
    dataset_inputs = {"features_sha256": file_sha256(Path(features_outputs["file"])), "plan": features_inputs}
    if cache.done("dataset", dataset_inputs) is None:
        cache.invalidate_after("dataset")
        features = _load_feature_matrix(Path(features_outputs["file"]))
        write_xlsa17_folder(data_root / spec.xlsa17, plan, features, meta, layout)
        cache.record("dataset", dataset_inputs, {}, [data_root / spec.xlsa17 / "res101.mat"])

    # 5. train + evaluate
    train_dir = work / "train"
    train_inputs = {
        "dataset": dataset_inputs,
        "epochs": options.epochs,
        "seed": options.seed,
        "selection": options.selection,
        "preset": spec.preset,
    }
    metrics = cache.done("train", train_inputs)
    if metrics is None:
        cache.invalidate_after("train")
        metrics = _train(spec, data_root, train_dir, options)
        cache.record("train", train_inputs, metrics, [train_dir / "metrics.json", Path(metrics["model_dir"])])

    # 6. bundle
    bundle_dir = Path(options.out) if options.out else options.checkpoints / f"{spec.key}-{slug}"
    provenance = _provenance(spec, options, plan, urls, source_ids, features_outputs, metrics)
    bundle_inputs = {"train": train_inputs, "metrics_sha256": file_sha256(train_dir / "metrics.json")}
    bundle_inputs["out"] = str(bundle_dir.resolve())
    if cache.done("bundle", bundle_inputs) is None:
        _write_bundle(
            spec, data_root, Path(metrics["model_dir"]), features_outputs, bundle_dir, provenance, options
        )
        cache.record("bundle", bundle_inputs, {"bundle": str(bundle_dir)}, [bundle_dir])
    log.info(
        "bootstrap %s finished in %.0f s (skipped: %s)",
        spec.key,
        time.perf_counter() - started,
        cache.skipped,
    )
    return BootstrapResult(
        bundle_dir, metrics, plan.origin, len(plan.relative_paths), cache.skipped, work, dict(cache.seconds)
    )


def _sources_and_plan(
    spec: DatasetSpec, options: BootstrapOptions, work: Path, cache: StepCache
) -> tuple[dict[str, str], dict[str, Any], Any, Any, Path, ImagePlan]:
    """Steps 1 and 2: ``(urls, source ids, xlsa17 meta, layout, plan file, plan)``."""
    if options.weights != "random" and not (cache.folder / "features.json").is_file():
        # Hub or file weights can be missing; find out (in seconds) before downloading gigabytes of images.
        _create_backbone(options)
        cache.lap("backbone")

    # 1. sources (download + extract are individually cached by acmr_core.data.download)
    roots, urls, source_ids = _source_roots(spec, options)
    meta = load_xlsa17_meta(roots["xlsa17"], spec, urls["xlsa17"])
    layout = spec.locate(roots, urls)
    cache.record("sources", {"dataset": spec.key}, {"sources": source_ids}, [])

    # 2. plan
    plan_path = work / "plan.json"
    plan_inputs = {"dataset": spec.key, "sources": source_ids}
    if cache.done("plan", plan_inputs) is None:
        cache.invalidate_after("plan")
        plan = plan_images(spec, layout, meta)
        work.mkdir(parents=True, exist_ok=True)
        plan_path.write_text(json.dumps(plan.to_json()))
        cache.record(
            "plan", plan_inputs, {"origin": plan.origin, "n_images": len(plan.relative_paths)}, [plan_path]
        )
    plan = ImagePlan.from_json(json.loads(plan_path.read_text()))
    log.info("%s: %d images (%s)", spec.xlsa17, len(plan.relative_paths), plan.origin)
    return urls, source_ids, meta, layout, plan_path, plan


# ------------------------------------------------------------------------------------------------------------
# Steps 3, 5, 6 (they call the other modules)


def _create_backbone(options: BootstrapOptions) -> Any:
    """The chosen backbone (kept in acmr_core.features.backbone's cache, so asking twice costs nothing)."""
    from acmr_core.features.backbone import create_backbone

    return create_backbone(
        weights=options.weights, device=options.device, seed=options.seed, batch_size=options.batch_size
    )


def _extract_features(
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
    from acmr_core.features.extract import FeatureSet, save_features
    from acmr_core.features.sharding import ShardJob, ShardLayout, extract_in_shards, image_list_sha256

    session = session or Session()
    backbone = session.agreed(lambda: _create_backbone(options))
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


def _extract_features_as_helper(options: BootstrapOptions, work: Path, session: Session) -> None:
    """A rank other than 0: wait for rank 0's sources and plan, then extract its share of the shards."""
    session.agree()  # pairs with rank 0's steps 1-2 (which may take as long as the download)
    order = session.broadcast(None)
    if order is None:
        log.info("%s: the features are up to date; nothing to do here", session.describe())
        return
    plan = ImagePlan.from_json(order["plan"])
    _extract_features(plan, list(order["classes"]), options, work, order["sha"], session)
    log.info("%s: its shards are done; rank 0 trains and writes the bundle", session.describe())


def _load_feature_matrix(path: Path) -> np.ndarray:
    from acmr_core.features.extract import load_features

    return np.asarray(load_features(path).features, dtype=np.float32)


def _train(spec: DatasetSpec, data_root: Path, train_dir: Path, options: BootstrapOptions) -> dict[str, Any]:
    from acmr_core.data.xlsa17 import load_xlsa17
    from acmr_core.training.protocol import run_protocol

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
    (train_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_json_default))
    log.info(
        "%s test: U %.2f S %.2f H %.2f ZSL %.2f",
        spec.xlsa17,
        metrics["U"],
        metrics["S"],
        metrics["H"],
        metrics["zsl_top1"],
    )
    return json.loads(json.dumps(metrics, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _backbone_spec(identity: dict[str, Any], options: BootstrapOptions) -> dict[str, Any]:
    from acmr_core.features.backbone import BackboneIdentity
    from acmr_core.pipelines.build import backbone_spec_from_identity

    weights = options.weights
    if Path(weights).expanduser().is_file():
        weights = str(Path(weights).expanduser().resolve())  # the app must find the file from anywhere
    return backbone_spec_from_identity(
        BackboneIdentity.from_dict(identity), weights=weights, seed=options.seed
    )


def _provenance(
    spec: DatasetSpec,
    options: BootstrapOptions,
    plan: ImagePlan,
    urls: dict[str, str],
    source_ids: dict[str, Any],
    features: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
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


def _catalog(data: Any) -> Any:
    """The bundle's class catalog: readable names (xlsa17's if they would collide) and the xlsa17 matrix."""
    from acmr_core.bundle.catalog import ClassCatalog

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


def _write_bundle(
    spec: DatasetSpec,
    data_root: Path,
    model_dir: Path,
    features: dict[str, Any],
    bundle_dir: Path,
    provenance: dict[str, Any],
    options: BootstrapOptions,
) -> None:
    """Assemble the bundle from the model that was trained and evaluated (no second training)."""
    from acmr_core.bundle.format import save_bundle
    from acmr_core.data.xlsa17 import load_xlsa17
    from acmr_core.defaults import DEFAULT_PLOT_PER_CLASS
    from acmr_core.features.backbone import BackboneIdentity
    from acmr_core.model.checkpoint import load_trained
    from acmr_core.pipelines.build import LabelledFeatures, assemble_bundle, sample_per_class
    from acmr_core.runtime import resolve_device

    data = load_xlsa17(data_root, spec.xlsa17)
    trained = load_trained(model_dir, device=resolve_device(options.device))
    catalog = _catalog(data)
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
