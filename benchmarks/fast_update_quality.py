"""How far the fast classifier update is from a full re-fit with many user classes, and what a brief joint
fine-tune of all rows recovers (issue 24).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fast_update_quality.py [USER_CLASSES=30] [--cache DIR]

The class set is benchmarks/user_class_latency.py's (its 30 render-your-class combinations, then seeded
fillers); quality is its fresh-render U / S / H and render-your-class top-1. ``ftK_lrL``: the fast
classifier, then K full-batch Adam steps (lr L, beta1 0.5) of softmax cross-entropy over all rows on the
re-fit's training latents; ``s`` is the fine-tune's time.
"""

import json
import sys
import tempfile
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from acmr_core.bundle.format import load_bundle
from acmr_core.data.demo_world import default_world, fresh_combinations
from acmr_core.model.gzsl import with_rows
from acmr_core.serving.class_space import unit_scale
from benchmarks.user_class_latency import combination_attributes, quality, rendered_features

torch.set_num_threads(1)
n_user = int(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else 30
cache = Path(sys.argv[sys.argv.index("--cache") + 1]) if "--cache" in sys.argv else Path(tempfile.mkdtemp())
bundle = load_bundle(Path(__file__).resolve().parent.parent / "checkpoints/demo-world", device="cpu")
cat = bundle.catalog
known = [dict(c.values) for c in default_world().subset(list(cat.names)).classes]
tests = fresh_combinations(known, 30, 0)
fillers = fresh_combinations(known + tests, n_user - 30, 1) if n_user > 30 else []
stored = tests + fillers
renders = rendered_features(bundle, tests, 4, cache)
names = list(cat.attribute_names)
scale = unit_scale(cat.attribute_matrix)
unit = np.array([[combination_attributes(v).get(n, 0.0) for n in names] for v in stored], np.float32)
attrs = np.concatenate([np.asarray(cat.attribute_matrix, np.float32), unit * scale])
mask = np.concatenate([cat.seen_mask, np.zeros(len(stored), bool)])
test_rows = cat.num_classes + np.arange(len(tests))
t = time.perf_counter()
full = bundle.refit_classifier(attrs, mask, seed=0)
tf = time.perf_counter() - t
fast = bundle.fast_classifier(attrs, mask, seed=0)
res = {
    "full": quality(bundle, full, renders, test_rows, 4),
    "full_s": tf,
    "fast": quality(bundle, fast, renders, test_rows, 4),
}
# joint fine-tune from fast
z, y = bundle._training_latents(attrs, np.flatnonzero(~mask), 0)
print(
    "latents",
    z.shape,
    "classes",
    attrs.shape[0],
    "epochs",
    bundle.trained.classifier_epochs,
    bundle.trained.train.classifier_optimizer(),
)
for steps, lr in [(20, 0.01), (50, 0.01), (50, 0.003), (100, 0.003)]:
    clf = with_rows(fast, torch.zeros(0, fast.fc.in_features), torch.zeros(0))
    clf.train()
    opt = torch.optim.Adam(clf.parameters(), lr=lr, betas=(0.5, 0.999))
    t = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(clf(z), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    el = time.perf_counter() - t
    clf.eval()
    res[f"ft{steps}_lr{lr}"] = {**quality(bundle, clf, renders, test_rows, 4), "s": el}
print(json.dumps(res, indent=1))
