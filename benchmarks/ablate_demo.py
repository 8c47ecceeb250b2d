"""Ablation of the demo bundle's levers on the *validation* split: render + extract once, train several.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/ablate_demo.py --max-per-class 100 \\
        --configs 30:100 100:100 100:150 [--out checkpoints/demo-world --final 100:150]

Renders ``--max-per-class`` training images per seen class (render seed 0) and the plot renders once (cached
under ``--cache``, keyed on the backbone hash), then for each ``PER_CLASS:EPOCHS`` config trains the demo
bundle on the first ``PER_CLASS`` renders of every class and prints its validation H (the split of the seen
classes that picks the classifier epochs and γ; no evaluation render is looked at). With ``--out`` the
``--final`` config is built with the UMAP map and saved: the same bundle as ``acmr build-demo
--train-per-class P --epochs E`` (same renders, same extraction order).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def first_per_class(train, per_class: int):
    """The first ``per_class`` renders of every class (renders are extracted class by class, index order)."""
    from acmr_core.pipelines.build import LabelledFeatures

    rows = [i for i, image_id in enumerate(train.image_ids) if int(image_id.rsplit("/", 1)[1]) < per_class]
    return LabelledFeatures(train.features[rows], train.labels[rows], tuple(train.image_ids[i] for i in rows))


def cached_sets(backbone, world, max_per_class: int, plot_per_class: int, cache: Path):
    from acmr_core.pipelines import demo
    from acmr_core.pipelines.build import LabelledFeatures

    key = f"{backbone.identity.weights_sha256[:12]}-{max_per_class}-{plot_per_class}"
    path = cache / f"demo-sets-{key}.npz"
    if path.is_file():
        data = np.load(path)
        sets = []
        for part in ("train", "plot"):
            ids = tuple(str(i) for i in data[f"{part}_ids"])
            sets.append(LabelledFeatures(data[f"{part}_features"], data[f"{part}_labels"], ids))
        return tuple(sets)
    train, plot = demo.render_demo_sets(world, backbone, max_per_class, plot_per_class)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        **{f"{name}_{field}": np.asarray(getattr(part, field if field != "ids" else "image_ids"))
           for name, part in (("train", train), ("plot", plot)) for field in ("features", "labels", "ids")},
    )  # fmt: skip
    return train, plot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-class", type=int, default=100)
    parser.add_argument("--plot-per-class", type=int, default=8)
    parser.add_argument("--configs", nargs="*", default=[], help="PER_CLASS:EPOCHS to compare")
    parser.add_argument("--residual-scale", type=float, default=0.0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/acmr-demo-ablation"))
    parser.add_argument("--out", type=Path, default=None, help="also build and save the --final config here")
    parser.add_argument("--final", default=None, help="PER_CLASS:EPOCHS of the saved bundle")
    args = parser.parse_args()

    from acmr_core.data import demo_world
    from acmr_core.features.backbone import create_backbone
    from acmr_core.pipelines import demo

    world = demo_world.default_world()
    backbone = create_backbone(device="cpu", residual_scale=args.residual_scale)
    train, plot = cached_sets(backbone, world, args.max_per_class, args.plot_per_class, args.cache)
    common = {"world": world, "device": "cpu", "residual_scale": args.residual_scale, "progress": False}
    for config in args.configs:
        per_class, epochs = (int(v) for v in config.split(":"))
        started = time.perf_counter()
        bundle = demo.build_demo_bundle(
            None, train_per_class=per_class, plot_per_class=args.plot_per_class, epochs=epochs,
            projection="pca", rendered=(first_per_class(train, per_class), plot), **common,
        )  # fmt: skip
        selection = bundle.trained.selection
        print(json.dumps({
            "config": config, "residual_scale": args.residual_scale, "val_H": selection.get("val_H"),
            "val_U": selection.get("val_U"), "val_S": selection.get("val_S"), "gamma": bundle.gamma,
            "seconds": round(time.perf_counter() - started),
        }), flush=True)  # fmt: skip
    if args.out is not None and args.final:
        per_class, epochs = (int(v) for v in args.final.split(":"))
        bundle = demo.build_demo_bundle(
            args.out, train_per_class=per_class, plot_per_class=args.plot_per_class, epochs=epochs,
            rendered=(first_per_class(train, per_class), plot), **common,
        )  # fmt: skip
        print(json.dumps({"saved": str(args.out), "val_H": bundle.trained.selection.get("val_H")}))


if __name__ == "__main__":
    main()
