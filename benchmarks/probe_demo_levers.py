"""Quick proxy for demo-world levers: a logistic probe per attribute group on backbone features.

Renders random attribute combinations (seeded), extracts features with a variant of the offline backbone,
fits a logistic regression per group on the first part and scores the rest. Cheap compared with a bundle
rebuild; used to choose which levers to try in ``acmr build-demo`` (docs/benchmarks/demo.md).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/probe_demo_levers.py --variant base --n 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from acmr_core.data import demo_world
from acmr_core.features.backbone import create_backbone


def random_values(rng: np.random.Generator) -> dict[str, str]:
    return {group: str(rng.choice(values)) for group, values in demo_world.ATTRIBUTE_GROUPS.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--fit", type=float, default=2 / 3)
    parser.add_argument("--residual-scale", type=float, default=None)
    parser.add_argument("--tag", default="")
    parser.add_argument("--cache", default="/tmp/demo11")
    args = parser.parse_args()
    torch.set_num_threads(1)
    kwargs = {} if args.residual_scale is None else {"residual_scale": args.residual_scale}
    backbone = create_backbone(device="cpu", **kwargs)
    rng = np.random.default_rng(123)
    values = [random_values(rng) for _ in range(args.n)]
    images = [
        demo_world.render_class(v, np.random.default_rng(np.random.SeedSequence([77, i])))
        for i, v in enumerate(values)
    ]
    start = time.time()
    features = backbone.features(images)
    seconds = (time.time() - start) / len(images)
    Path(args.cache).mkdir(exist_ok=True, parents=True)
    np.savez(Path(args.cache) / f"probe_{args.tag}.npz", features=features)
    n_fit = int(args.n * args.fit)
    result = {"tag": args.tag, "s_per_image": round(seconds, 3)}
    x = StandardScaler().fit(features[:n_fit]).transform(features)
    for group in demo_world.ATTRIBUTE_GROUPS:
        y = np.array([v[group] for v in values])
        probe = LogisticRegression(max_iter=2000, C=1.0).fit(x[:n_fit], y[:n_fit])
        result[group] = round(100 * float((probe.predict(x[n_fit:]) == y[n_fit:]).mean()), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
