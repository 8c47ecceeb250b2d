"""One command from download to a served bundle: CUB, AwA2 and SUN on a timm backbone.

:func:`bootstrap` runs these steps, each cached by a small JSON state file (``<work>/state/<step>.json``) that
records a hash of the step's inputs and the outputs it made; a rerun skips every step whose inputs are
unchanged and whose outputs still exist:

1. ``sources``  — download (resumable, checksummed where published) and unpack each archive the dataset needs
   plus ``xlsa17.zip`` (:mod:`acmr_core.data.download`, :mod:`acmr_core.data.archives`,
   :mod:`acmr_core.data.sources`, :mod:`acmr_core.data.layouts`).
2. ``plan``     — exactly the images of the xlsa17 split, in xlsa17 order (``res101.mat`` ``image_files``), or
   the split rebuilt from the class lists when ``res101.mat`` is absent (said in the log and the provenance;
   :mod:`acmr_core.data.image_plan`).
3. ``features`` — features of those images with the chosen backbone (:mod:`acmr_core.features.extract`).
4. ``dataset``  — an xlsa17-layout folder (our ``res101.mat`` + ``att_splits.mat`` + names) that
   :func:`acmr_core.data.xlsa17.load_xlsa17` reads, so training is exactly ``acmr train`` on it.
5. ``train``    — ACMR with validation-based selection, evaluated once on the test split (U, S, H, ZSL top-1).
6. ``bundle``   — a bundle under ``checkpoints/<dataset>-<weights>/`` that the app lists.

Folders under ``--data-dir``: ``downloads/`` (archives), ``sources/<name>/`` (unpacked, shared between runs),
``work/<dataset>-<weights>/`` (plan, features, dataset folder, training output, state).

This module is the step cache and the runner; the steps themselves are
:mod:`acmr_core.pipelines.bootstrap_steps`.

Under torchrun (``torchrun --nproc_per_node=N -m acmr_core bootstrap cub``) rank 0 runs every step and the
other ranks join for the ``features`` step only: they wait for rank 0's plan, extract their share of the
shards (:mod:`acmr_core.features.sharding`) and exit; rank 0 merges, trains and writes the bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmr_core.data.image_plan import ImagePlan, plan_images, write_xlsa17_folder
from acmr_core.data.layouts import DatasetLayout, DatasetSpec, Xlsa17Meta, get_dataset, load_xlsa17_meta
from acmr_core.features.distributed import Session
from acmr_core.features.weights import WEIGHT_FILE_SUFFIXES
from acmr_core.fileio import atomic_write, file_sha256
from acmr_core.pipelines.bootstrap_steps import (
    BootstrapOptions,
    bootstrap_provenance,
    chosen_backbone,
    extract_features,
    extract_features_as_helper,
    load_feature_matrix,
    source_roots,
    train_and_evaluate,
    write_bundle,
)

log = logging.getLogger(__name__)

STATE_FORMAT = 1
STEPS = ("sources", "plan", "features", "dataset", "train", "bundle")

__all__ = ["STEPS", "BootstrapOptions", "BootstrapResult", "StepCache", "bootstrap", "weights_slug"]


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


def _json_hash(value: Any) -> str:
    # Not fileio's JSON hashing: this exact formula names the state files' inputs and the feature shard
    # folders already on users' disks, so changing it would redo finished steps.
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
        atomic_write(self._path(step), json.dumps(state, indent=1, default=str).encode())

    def invalidate_after(self, step: str) -> None:
        """Forget every step after ``step`` (their inputs changed)."""
        for later in STEPS[STEPS.index(step) + 1 :]:
            self._path(later).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------------
# Weights


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
        extract_features_as_helper(options, work, session)
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
        features_outputs = extract_features(plan, meta.class_names, options, work, inputs_sha256, session)
        assert features_outputs is not None  # rank 0 always merges
        cache.record("features", features_inputs, features_outputs, [Path(features_outputs["file"])])
    if features_outputs.get("dropped"):
        plan = plan.drop(np.asarray(features_outputs["dropped"], dtype=np.int64))

    # 4. dataset folder in the xlsa17 layout
    data_root = work / "xlsa17"
    dataset_inputs = {"features_sha256": file_sha256(Path(features_outputs["file"])), "plan": features_inputs}
    if cache.done("dataset", dataset_inputs) is None:
        cache.invalidate_after("dataset")
        features = load_feature_matrix(Path(features_outputs["file"]))
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
        metrics = train_and_evaluate(spec, data_root, train_dir, options)
        cache.record("train", train_inputs, metrics, [train_dir / "metrics.json", Path(metrics["model_dir"])])

    # 6. bundle
    bundle_dir = Path(options.out) if options.out else options.checkpoints / f"{spec.key}-{slug}"
    provenance = bootstrap_provenance(spec, options, plan, urls, source_ids, features_outputs, metrics)
    bundle_inputs = {"train": train_inputs, "metrics_sha256": file_sha256(train_dir / "metrics.json")}
    bundle_inputs["out"] = str(bundle_dir.resolve())
    if cache.done("bundle", bundle_inputs) is None:
        write_bundle(
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
) -> tuple[dict[str, str], dict[str, Any], Xlsa17Meta, DatasetLayout, Path, ImagePlan]:
    """Steps 1 and 2: ``(urls, source ids, xlsa17 meta, layout, plan file, plan)``."""
    if options.weights != "random" and not (cache.folder / "features.json").is_file():
        # Hub or file weights can be missing; find out (in seconds) before downloading gigabytes of images.
        chosen_backbone(options)
        cache.lap("backbone")

    # 1. sources (download and unpacking are individually cached by acmr_core.data.download / .archives)
    roots, urls, source_ids = source_roots(spec, options)
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
        atomic_write(plan_path, json.dumps(plan.to_json()).encode())
        cache.record(
            "plan", plan_inputs, {"origin": plan.origin, "n_images": len(plan.relative_paths)}, [plan_path]
        )
    plan = ImagePlan.from_json(json.loads(plan_path.read_text()))
    log.info("%s: %d images (%s)", spec.xlsa17, len(plan.relative_paths), plan.origin)
    return urls, source_ids, meta, layout, plan_path, plan
