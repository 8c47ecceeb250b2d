"""Render your class: new attribute combinations, each added as a user class, drawn and recognised.

    .venv/bin/python benchmarks/bench_render_class.py [--bundle checkpoints/demo-world] [--classes 30]
        [--images 4] [--seed 0] [--json]

Over a seeded sample of ``--classes`` attribute combinations that are neither seen nor unseen classes of the
bundle, each is added in turn as a user class (the service re-fits the GZSL classifier), ``--images`` images
of it are drawn with the demo renderer (render seed ``demo_world.EXAMPLES_SEED``, never used in a build)
and predicted with all classes competing (generalized setting, the bundle's γ). Reports top-1 accuracy
(target >= 70 %) overall and per class.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("checkpoints/demo-world"))
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from acmr_core.data.demo_world import DemoClass, default_world, fresh_combinations
    from acmr_core.serving.service import StudioService

    world = default_world()
    with tempfile.TemporaryDirectory() as folder:
        service = StudioService.open(args.bundle, device="cpu", user_classes_dir=folder, warm=False)
        known = [dict(c.values) for c in world.subset(service.class_names()).classes]
        per_class: dict[str, float] = {}
        for values in fresh_combinations(known, args.classes, args.seed):
            name = f"my {DemoClass(values=values, seen=False).name}"
            service.define_class(name, {f"{group}: {value}": 1.0 for group, value in values.items()})
            examples = service.render_examples(name, count=args.images)
            per_class[name] = 100.0 * float(np.mean([example.recognised for example in examples]))
            service.delete_class(name)
        service.store.close()
    result = {
        "bundle": args.bundle.name,
        "classes": len(per_class),
        "images_per_class": args.images,
        "top1_percent": float(np.mean(list(per_class.values()))),
        "classes_all_right": sum(value == 100.0 for value in per_class.values()),
        "per_class_percent": per_class,
    }
    print(json.dumps(result, indent=1) if args.json else "\n".join(f"{k:22s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
