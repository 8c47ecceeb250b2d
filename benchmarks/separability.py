"""Issue 32: a class the model cannot tell apart is never accepted silently, nor takes over another class.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/separability.py [--bundle checkpoints/demo-world]
        [--twins 36] [--controls 36] [--images 5] [--seed 0] [--latency-classes 100] [--stability 6]
        [--skip-cub] [--only demo|guard_all|stability|cub]

Four measurements, each class defined alone (added to an empty visitor, judged, then deleted):

* **shape-only twins** of demo-world classes (a class with another shape, the rest the same): each must be
  told apart (at least 4 of ``--images`` fresh renders answered as itself, and the twin keeping at least 4 of
  its own) or warned about, naming the twin;
* **controls**, new combinations that differ from every class in a group other than shape: the share of
  their fresh renders recognised (target >= 90 % each) and of them warned about (target <= 5 %);
* **nothing taken over silently**: after each add, which bundle classes lose a render (4 each, drawn once)
  to the new class, and whether the add's warning named each of them;
* **the guard alone** (no renders) on every shape-only twin and every control of the demo world;
* **cost**: the guard's time per add with ``--latency-classes`` user classes (median, one torch thread),
  with the new class's row already fitted (the add fits it anyway) and from scratch (the live preview);
* **a stable verdict**: ``--stability`` classes that got no warning, each followed while three unrelated
  classes are added and deleted (six edits, the served app's background re-fit swapped in after each):
  the largest change of its *Show examples* verdict (4 renders);
* **a CUB-layout bundle** (synthetic features over the real xlsa17 CUB metadata, 40 images per class, 25
  epochs: fewer leave the model reading nothing held-out): the warning rate on 30 random new attribute
  vectors and on 10 near-copies of existing classes.

Fresh renders use render seed ``demo_world.EXAMPLES_SEED`` (never used to build a bundle): what *Show
examples* draws.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acmr_core.data import demo_world


def attributes_of(values: dict[str, str]) -> dict[str, float]:
    return {demo_world.attribute_name(group, value): 1.0 for group, value in values.items()}


def strong_key(values: dict[str, str]) -> tuple[str, ...]:
    return tuple(values[group] for group in demo_world.ATTRIBUTE_GROUPS if group != "shape")


def twins_and_controls(known: list[dict[str, str]], seed: int) -> tuple[list, list]:
    """Every shape-only twin ``(twin index, values)`` and every control, each in a seeded order."""
    twins = []
    for index, values in enumerate(known):
        for shape in demo_world.ATTRIBUTE_GROUPS["shape"]:
            twin = {**values, "shape": shape}
            if twin not in known:
                twins.append((index, twin))
    keys = {strong_key(values) for values in known}
    controls = [values for values in demo_world.all_combinations() if strong_key(values) not in keys]
    rng = np.random.default_rng(seed)
    return [twins[i] for i in rng.permutation(len(twins))], [
        controls[i] for i in rng.permutation(len(controls))
    ]


def define_alone(service: Any, name: str, values: dict[str, str], images: int) -> dict[str, Any]:
    """Add one class, judge what happens, delete it."""
    record = service.define_class(name, attributes_of(values))
    try:
        recognised = sum(example.recognised for example in service.render_examples(name, count=images))
        space = service.class_space()
    finally:
        service.delete_class(name)
    return {"record": record, "recognised": recognised, "space": space}


def bundle_class_renders(service: Any, count: int) -> tuple[Any, np.ndarray]:
    """Latents of ``count`` fresh renders of every bundle class (drawn once), and their class indices."""
    features, labels = [], []
    for index, name in enumerate(service.class_names()):
        images = [example.image for example in service.render_examples(name, count=count)]
        features.append(service.backbone.features(images))
        labels += [index] * count
    return service.bundle.trained.latents(np.concatenate(features)), np.array(labels)


def top1(service: Any, space: Any, latents: Any) -> np.ndarray:
    scores = service.bundle.trained.scores_of_latents(latents, classifier=space.classifier)
    return scores.argmax(dim=1).cpu().numpy()


def demo_part(args: argparse.Namespace) -> dict[str, Any]:
    from acmr_core.serving.service import StudioService

    with tempfile.TemporaryDirectory() as folder:
        service = StudioService.open(args.bundle, device="cpu", user_classes_dir=folder, warm=False)
        world = demo_world.default_world().subset(service.class_names())
        known = [dict(item.values) for item in world.classes]
        twins, controls = twins_and_controls(known, args.seed)
        latents, labels = bundle_class_renders(service, 4)
        before = top1(service, service.class_space(), latents)
        n_bundle = len(known)
        silent: list[str] = []

        def takeovers(space: Any, name: str, warned: list[str]) -> None:
            after = top1(service, space, latents)
            lost = np.bincount(labels[(before == labels) & (after == n_bundle)], minlength=n_bundle)
            held = np.bincount(labels[before == labels], minlength=n_bundle)
            for other in np.flatnonzero(lost):
                if service.class_names()[other] not in warned:
                    silent.append(
                        f"{name} took {lost[other]} of {held[other]} of {service.class_names()[other]}"
                    )

        twin_rows = []
        for twin_index, values in twins[: args.twins]:
            twin_name = service.class_names()[twin_index]
            name = f"my {demo_world.DemoClass(values=values, seen=False).name}"
            outcome = define_alone(service, name, values, args.images)
            warning = outcome["record"]["warning"]
            warned = warning["confused_with"] if warning else []
            space = service.class_space()
            twin_kept = None
            if not warned:  # told apart? the twin's renders with the new class competing
                service.define_class(name, attributes_of(values))
                twin_kept = sum(e.recognised for e in service.render_examples(twin_name, count=args.images))
                space = service.class_space()
                service.delete_class(name)
            takeovers(outcome["space"], name, warned)
            told_apart = twin_kept is not None and outcome["recognised"] >= 4 and twin_kept >= 4
            twin_rows.append({
                "class": name, "twin": twin_name, "recognised": outcome["recognised"],
                "twin_kept": twin_kept, "warned_naming_twin": twin_name in warned, "told_apart": told_apart,
                "ok": told_apart or twin_name in warned,
            })  # fmt: skip
            del space
        control_rows = []
        for values in controls[: args.controls]:
            name = f"my {demo_world.DemoClass(values=values, seen=False).name}"
            outcome = define_alone(service, name, values, args.images)
            warning = outcome["record"]["warning"]
            takeovers(outcome["space"], name, warning["confused_with"] if warning else [])
            control_rows.append({"class": name, "recognised": outcome["recognised"], "warned": bool(warning)})
        read = service.classes.builder.guard.read
        latency = guard_latency(service, controls, args.latency_classes)
        service.store.close()
    n_images = args.images
    return {
        "bundle": args.bundle.name,
        "group_readability_held_out": {group: value for group, value in read.items()},
        "twins": {
            "n": len(twin_rows),
            "warned_naming_twin": sum(row["warned_naming_twin"] for row in twin_rows),
            "told_apart": sum(row["told_apart"] for row in twin_rows),
            "neither": [row["class"] for row in twin_rows if not row["ok"]],
            "renders_recognised_percent": 100.0 * np.mean([r["recognised"] for r in twin_rows]) / n_images,
        },
        "controls": {
            "n": len(control_rows),
            "warned": sum(row["warned"] for row in control_rows),
            "renders_recognised_percent": 100.0 * np.mean([r["recognised"] for r in control_rows]) / n_images,
            "classes_at_least_90_percent": sum(r["recognised"] >= 0.9 * n_images for r in control_rows),
            "below_90_percent": [r["class"] for r in control_rows if r["recognised"] < 0.9 * n_images],
        },
        "silent_takeovers_of_bundle_renders": silent,
        "latency": latency,
    }


def guard_all_part(args: argparse.Namespace) -> dict[str, Any]:
    """The guard alone (no renders) on every shape-only twin and every control of the demo world."""
    from acmr_core.bundle.format import load_bundle
    from acmr_core.serving.class_space import SpaceBuilder

    builder = SpaceBuilder(load_bundle(args.bundle, device="cpu"))
    names = builder.attribute_names
    known = [dict(item.values) for item in demo_world.default_world().subset(builder.bundle_names).classes]
    twins, controls = twins_and_controls(known, args.seed)

    def verdict(values: dict[str, str]) -> Any:
        unit = np.array([attributes_of(values).get(name, 0.0) for name in names], np.float32)
        return builder.judge(builder.base, unit)

    named = sum(builder.bundle_names[index] in verdict(values).confused_with for index, values in twins)
    warned = [verdict(values) for values in controls]
    return {
        "twins_warned_naming_the_twin": f"{named} of {len(twins)}",
        "controls_warned": f"{sum(not item.ok for item in warned)} of {len(controls)}",
        "control_warning_reasons": sorted({c.reason for item in warned for c in item.confusions}),
    }


def stability_part(args: argparse.Namespace) -> dict[str, Any]:
    """Unwarned classes' *Show examples* verdicts while unrelated classes are added and deleted, as served
    (the background re-fit swapped in after each edit)."""
    from acmr_core.serving.service import StudioService

    with tempfile.TemporaryDirectory() as folder:
        service = StudioService.open(
            args.bundle, device="cpu", user_classes_dir=folder, warm=False, refine=True
        )
        known = [
            dict(item.values) for item in demo_world.default_world().subset(service.class_names()).classes
        ]
        _, controls = twins_and_controls(known, args.seed + 1)
        targets, others = controls[: args.stability], controls[args.stability : args.stability + 3]
        changes, unwarned = [], 0
        for position, values in enumerate(targets):
            name = f"target {position}"
            if service.define_class(name, attributes_of(values))["warning"]:
                service.delete_class(name)
                continue
            unwarned += 1
            verdicts = []
            edits = [("add", 0), ("add", 1), ("delete", 0), ("add", 2), ("delete", 1), ("delete", 2)]
            for action, index in [("none", -1), *edits]:
                if action == "add":
                    service.define_class(f"other {index}", attributes_of(others[index]))
                elif action == "delete":
                    service.delete_class(f"other {index}")
                service.classes.wait_refined()
                verdicts.append(sum(e.recognised for e in service.render_examples(name, count=4)))
            service.delete_class(name)
            service.classes.wait_refined()
            changes.append(
                {"class": name, "verdicts_of_4": verdicts, "largest_change": max(verdicts) - min(verdicts)}
            )
        service.store.close()
    return {
        "unwarned_classes": unwarned,
        "edits_each": 6,
        "largest_change_of_4": max((row["largest_change"] for row in changes), default=0),
        "per_class": changes,
    }


def guard_latency(service: Any, combinations: list[dict[str, str]], count: int) -> dict[str, Any]:
    """The guard's time for one more class over ``count`` user classes (one torch thread)."""
    import torch

    from acmr_core.serving.class_space import SpaceBuilder
    from acmr_core.serving.user_classes import UserClass

    builder: SpaceBuilder = service.classes.builder
    names = service.attribute_names
    vectors = [np.array([attributes_of(v).get(a, 0.0) for a in names], np.float32) for v in combinations]
    user = tuple(UserClass(f"user {i}", tuple(vectors[i].tolist()), float(i)) for i in range(count))
    started = time.perf_counter()
    space = builder.build(user)  # judged one by one, as a visitor's adds would be
    rebuild_s = time.perf_counter() - started
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        warm, cold = [], []
        for offset in range(20):
            candidate = vectors[count + offset]
            started = time.perf_counter()
            builder.judge(space, candidate)  # fits and caches the row, as the preview does
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            builder.judge(space, candidate)  # the row already fitted, as at Add after a preview
            warm.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return {
        "user_classes": count,
        "guard_ms_median_row_fitted": 1000 * statistics.median(warm),
        "guard_ms_median_with_row_fit": 1000 * statistics.median(cold),
        "rebuild_with_verdicts_s": rebuild_s,
        "warned_among_user_classes": sum(not verdict.ok for verdict in space.verdicts),
    }


def cub_part(seed: int) -> dict[str, Any]:
    """A CUB-layout bundle from synthetic features; warnings on random vectors and near-copies."""
    from acmr_core.features.backbone import BackboneIdentity

    identity = BackboneIdentity(
        model_name="resnet101", weight_source="synthetic", weights_sha256="0" * 64,
        transform={"input_size": [3, 224, 224], "crop_pct": 0.875}, feature_dim=512,
    )  # fmt: skip
    from acmr_core.bundle.catalog import ClassCatalog
    from acmr_core.data.synthetic import write_synthetic_xlsa17
    from acmr_core.data.xlsa17 import load_xlsa17
    from acmr_core.pipelines.build import LabelledFeatures, build_bundle
    from acmr_core.serving.class_space import SpaceBuilder

    with tempfile.TemporaryDirectory() as folder:
        root = write_synthetic_xlsa17(folder, "CUB", seed=seed, feature_dim=512, images_per_class=40)
        data = load_xlsa17(root.parent, "CUB")
        seen = np.zeros(len(data.class_names), dtype=bool)
        seen[data.seen_classes] = True
        catalog = ClassCatalog(tuple(data.class_names), tuple(data.attribute_names), data.attributes, seen)
        rows = np.concatenate([data.trainval, data.test_unseen])
        started = time.perf_counter()
        bundle = build_bundle(
            LabelledFeatures(data.features[data.trainval], data.labels[data.trainval]), catalog, None,
            identity=identity, plot_features=LabelledFeatures(data.features[rows], data.labels[rows]),
            preset="CUB", epochs=25, device="cpu", seed=seed, projection="pca", progress=False,
        )  # fmt: skip
        build_s = time.perf_counter() - started
    builder = SpaceBuilder(bundle)
    unit = builder.base.unit_attributes
    rng = np.random.default_rng(seed)
    # Random new vectors: each attribute's value taken from a random class (the marginals of real classes).
    randoms = unit[rng.integers(0, len(unit), size=(30, unit.shape[1])), np.arange(unit.shape[1])]
    copies_of = rng.choice(len(unit), size=10, replace=False)
    near = np.clip(unit[copies_of] + rng.normal(scale=0.05, size=(10, unit.shape[1])), 0.0, 1.0)
    random_verdicts = [builder.judge(builder.base, row) for row in randoms]
    near_verdicts = [builder.judge(builder.base, row) for row in near]
    read = builder.guard.read
    return {
        "classes": len(catalog.names),
        "attributes": len(catalog.attribute_names),
        "build_s": build_s,
        "group_readability_held_out": {g: None if v is None else round(v, 3) for g, v in read.items()},
        "groups_read": sum(v is not None and v >= 0.75 for v in read.values()),
        "groups_unread": [g for g, v in read.items() if v is not None and v < 0.75],
        "groups_without_evidence": [g for g, v in read.items() if v is None],
        "random_vectors_warned": f"{sum(not v.ok for v in random_verdicts)} of {len(random_verdicts)}",
        "near_copies_warned": f"{sum(not v.ok for v in near_verdicts)} of {len(near_verdicts)}",
        "near_copies_naming_their_original": sum(
            catalog.names[i] in v.confused_with for i, v in zip(copies_of, near_verdicts, strict=True)
        ),
        "random_reasons": sorted({c.reason for v in random_verdicts for c in v.confusions}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("checkpoints/demo-world"))
    parser.add_argument("--twins", type=int, default=36)
    parser.add_argument("--controls", type=int, default=36)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-classes", type=int, default=100)
    parser.add_argument("--stability", type=int, default=6, help="unwarned classes whose verdict is followed")
    parser.add_argument("--skip-cub", action="store_true")
    parser.add_argument("--only", choices=("demo", "guard_all", "stability", "cub"), default=None)
    args = parser.parse_args()
    parts = {"demo": lambda: demo_part(args), "guard_all": lambda: guard_all_part(args),
             "stability": lambda: stability_part(args), "cub": lambda: cub_part(args.seed)}  # fmt: skip
    chosen = [args.only] if args.only else [name for name in parts if not (name == "cub" and args.skip_cub)]
    result = {name: parts[name]() for name in chosen}
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
