"""Add and delete a user class with a full store: full classifier re-fit vs the fast (warm-started) update.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/user_class_latency.py [--bundle checkpoints/demo-world]
        [--classes 100] [--repeats 10] [--full-repeats 3] [--alone 10] [--cache DIR] [--json]

Issue 24. A store of ``--classes`` user classes (attribute combinations of the demo world that are neither
seen nor unseen classes of the bundle; seeded) is opened through :class:`StudioService`; then

* **latency**: ``define_class`` + ``delete_class`` of one more class, ``--repeats`` times each, end to end
  through the service (the fast path it serves with), and ``Bundle.refit_classifier`` over the same class sets
  (the full re-fit every edit used to run), ``--full-repeats`` times each (one costs seconds);
* **quality**: the bundle's fresh-render GZSL U / S / H (the renders of ``acmr evaluate --bundle``: render
  seed ``DEFAULT_EVAL_SEED``, 20 per class) scored with the classifier over all classes (bundle + store) built
  by the full re-fit and by the fast update, and render-your-class top-1 (``bench_render_class.py``'s 30
  combinations, seed 0, 4 renders each with ``EXAMPLES_SEED``; they are part of the store) with all classes
  competing, at the bundle's gamma; and both again with one user class only (each of the first ``--alone``
  test classes alone next to the bundle's, as ``bench_render_class.py`` adds them), averaged.

Rendered features are cached in ``--cache`` (default: a temporary folder) so a re-run skips the backbone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from acmr_core.data.demo_world import fresh_combinations


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def spread(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def combination_attributes(values: dict[str, str]) -> dict[str, float]:
    return {f"{group}: {value}": 1.0 for group, value in values.items()}


def rendered_features(bundle: Any, tests: list[dict[str, str]], images: int, cache: Path) -> dict[str, Any]:
    """Features of the fresh evaluation renders (as `acmr evaluate --bundle`) and of the test classes'
    renders."""
    from acmr_core.data import demo_world
    from acmr_core.pipelines.evaluate import DEFAULT_EVAL_PER_CLASS

    path = cache / f"renders-{bundle.name}-{len(tests)}x{images}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return {name: saved[name] for name in saved.files}
    backbone = bundle.create_backbone(device="cpu")
    size = int(bundle.provenance["demo_world"].get("render_size", demo_world.RENDER_SIZE))
    drawn = [
        demo_world.render_combination(values, demo_world.EXAMPLES_SEED, index, size)
        for values in tests
        for index in range(images)
    ]
    world = demo_world.default_world().subset(list(bundle.catalog.names))
    features, labels, _ = demo_world.extract_renders(
        world, backbone, demo_world.DEFAULT_EVAL_SEED, DEFAULT_EVAL_PER_CLASS, progress=False
    )
    result = {"eval_features": features, "eval_labels": labels, "ryc_features": backbone.features(drawn)}
    np.savez(path, **result)
    return result


def quality(
    bundle: Any, classifier: Any, renders: dict[str, Any], test_rows: np.ndarray, images: int
) -> dict:
    """Fresh-render GZSL U / S / H and render-your-class top-1 (percent) with ``classifier``."""
    import torch

    from acmr_core.training.protocol import evaluate_trained

    trained = replace(bundle.trained, classifier=classifier)
    labels = renders["eval_labels"]
    seen = bundle.catalog.seen_mask[labels]
    features = renders["eval_features"]
    metrics = evaluate_trained(trained, features[seen], labels[seen], features[~seen], labels[~seen])
    with torch.inference_mode():
        predicted = trained.scores(renders["ryc_features"], classifier=classifier).argmax(1).cpu().numpy()
    wanted = np.repeat(test_rows, images)
    return {
        "U": metrics["U"],
        "S": metrics["S"],
        "H": metrics["H"],
        "render_your_class_top1": 100.0 * float(np.mean(predicted == wanted)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("checkpoints/demo-world"))
    parser.add_argument("--classes", type=int, default=100, help="user classes in the store")
    parser.add_argument("--repeats", type=int, default=10, help="fast adds and deletes (each)")
    parser.add_argument("--full-repeats", type=int, default=3, help="full re-fits per add and per delete")
    parser.add_argument("--tests", type=int, default=30, help="render-your-class combinations (in the store)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--alone", type=int, default=10, help="test classes scored alone, full vs fast")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the rendered features")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from acmr_core.bundle.format import load_bundle
    from acmr_core.data.demo_world import DemoClass, default_world
    from acmr_core.serving.class_space import unit_scale
    from acmr_core.serving.service import StudioService
    from acmr_core.serving.threads import single_torch_thread
    from acmr_core.serving.user_classes import MAX_USER_CLASSES

    torch.set_num_threads(1)
    bundle = load_bundle(args.bundle, device="cpu")
    catalog = bundle.catalog
    known = [dict(c.values) for c in default_world().subset(list(catalog.names)).classes]
    tests = fresh_combinations(known, args.tests, 0)  # bench_render_class.py's sample
    fillers = fresh_combinations(known + tests, args.classes - len(tests), 1)
    stored = tests + fillers
    cache = args.cache or Path(tempfile.mkdtemp())
    cache.mkdir(parents=True, exist_ok=True)
    renders = rendered_features(bundle, tests, args.images, cache)

    names = list(catalog.attribute_names)
    scale = unit_scale(catalog.attribute_matrix)

    def attribute_rows(classes: list[dict[str, float]]) -> np.ndarray:
        unit = np.array([[c.get(n, 0.0) for n in names] for c in classes], dtype=np.float32)
        return np.concatenate([np.asarray(catalog.attribute_matrix, np.float32), unit * scale])

    def mask(rows: int) -> np.ndarray:
        return np.concatenate([catalog.seen_mask, np.zeros(rows - catalog.num_classes, bool)])

    store_attributes = [combination_attributes(values) for values in stored]
    result: dict[str, Any] = {
        "bundle": bundle.name,
        "bundle_classes": catalog.num_classes,
        "user_classes": len(stored),
        "max_user_classes": MAX_USER_CLASSES,
        "load_average_before": os.getloadavg(),
    }

    # ---- quality: the same class set (bundle + store), full re-fit vs fast update ----
    attributes = attribute_rows(store_attributes)
    test_rows = catalog.num_classes + np.arange(len(tests))
    with single_torch_thread():
        full = bundle.refit_classifier(attributes, mask(len(attributes)), seed=0)
        fast = bundle.fast_classifier(attributes, mask(len(attributes)), seed=0)
    result["quality"] = {
        "bundle_only": quality(bundle, bundle.classifier, renders, np.full(len(tests), -1), args.images),
        "full_refit": quality(bundle, full, renders, test_rows, args.images),
        "fast": quality(bundle, fast, renders, test_rows, args.images),
    }
    result["quality"]["bundle_only"]["render_your_class_top1"] = None  # its classes are not in it
    # Render your class as bench_render_class.py runs it (each test class alone, next to the bundle's).
    alone = []
    for index, values in enumerate(tests):
        classifier = bundle.fast_classifier(
            attribute_rows([combination_attributes(values)]), mask(catalog.num_classes + 1)
        )
        features = renders["ryc_features"][index * args.images : (index + 1) * args.images]
        with torch.inference_mode():
            scores = bundle.trained.scores(features, classifier=classifier)
        alone.append(float(np.mean(scores.argmax(1).cpu().numpy() == catalog.num_classes)))
    result["quality"]["fast_each_class_alone_top1"] = 100.0 * float(np.mean(alone))
    # Fresh-render H and render your class with ONE user class (the first --alone tests), full vs fast.
    single: dict[str, list[dict[str, float]]] = {"full_refit": [], "fast": []}
    for index, values in enumerate(tests[: args.alone]):
        rows = attribute_rows([combination_attributes(values)])
        own = {"eval_features": renders["eval_features"], "eval_labels": renders["eval_labels"]}
        own["ryc_features"] = renders["ryc_features"][index * args.images : (index + 1) * args.images]
        with single_torch_thread():
            built = {
                "full_refit": bundle.refit_classifier(rows, mask(len(rows)), seed=0),
                "fast": bundle.fast_classifier(rows, mask(len(rows)), seed=0),
            }
        for kind, classifier in built.items():
            single[kind].append(
                quality(bundle, classifier, own, np.array([catalog.num_classes]), args.images)
            )
    result["quality"]["one_user_class"] = {
        kind: {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        for kind, runs in single.items()
    }

    # ---- latency through the service, the store holding --classes user classes ----
    # A new combination each time (none stored, none of the bundle's): every add trains its row. Drawable
    # combinations, since a demo-world service refuses a class it could not draw (issue 25).
    extras = fresh_combinations(known + stored, args.repeats, 2)
    with tempfile.TemporaryDirectory() as folder:
        service = StudioService.open(args.bundle, device="cpu", user_classes_dir=folder, warm=True)
        document = {
            "format": "acmr-user-classes",
            "version": 1,
            "bundle": service.store.bundle_key,
            "classes": [
                {"name": f"my {DemoClass(values=v, seen=False).name}", "attributes": a}
                for v, a in zip(stored, store_attributes, strict=True)
            ],
        }
        result["import_store_s"] = timed(lambda: service.import_classes(json.dumps(document)))
        result["open_with_store_s"] = timed(
            lambda: StudioService.open(args.bundle, device="cpu", user_classes_dir=folder, warm=False)
        )
        adds, deletes = [], []
        extra = []
        for index, combination in enumerate(extras):
            values = combination_attributes(combination)
            extra.append(values)
            adds.append(timed(lambda i=index, v=values: service.define_class(f"extra {i}", v)))
            deletes.append(timed(lambda i=index: service.delete_class(f"extra {i}")))
        result["fast_add"] = spread(adds)
        result["fast_delete"] = spread(deletes)
        service.store.close()

    # ---- latency of the full re-fit over the same class sets ----
    full_adds, full_deletes = [], []
    with single_torch_thread():
        for values in extra[: args.full_repeats]:
            rows = attribute_rows([*store_attributes, values])
            full_adds.append(timed(lambda r=rows: bundle.refit_classifier(r, mask(len(r)), seed=0)))
            rows = attribute_rows(store_attributes[:-1])  # a delete: one class fewer than the store
            full_deletes.append(timed(lambda r=rows: bundle.refit_classifier(r, mask(len(r)), seed=0)))
    result["full_add"] = spread(full_adds)
    result["full_delete"] = spread(full_deletes)
    result["load_average_after"] = os.getloadavg()
    result["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(result, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
