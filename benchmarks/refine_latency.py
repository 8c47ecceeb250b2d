"""How long after an edit a visitor's classifier is the full re-fit (background refinement, issue 24).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/refine_latency.py

A per-visitor service with refinement on (as the served app runs) on the demo bundle; one visitor grows to
1, 30 and 100 classes (drawable combinations that are no class of the bundle, seeded); at each size one
more class is added: ``add_s`` is the call (answered with the fast rows), ``refined_after_s`` the time from
the call until the background re-fit over all classes is swapped in.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from acmr_core.data.demo_world import default_world, fresh_combinations  # noqa: E402
from acmr_core.serving.service import StudioService  # noqa: E402
from benchmarks.user_class_latency import combination_attributes  # noqa: E402

folder = tempfile.mkdtemp()
service = StudioService.open(
    REPO / "checkpoints/demo-world", device="cpu", user_classes_dir=folder, per_visitor=True, refine=True
)
known = [dict(c.values) for c in default_world().subset(service.class_names()).classes]
combos = fresh_combinations(known, 101, 0)
v = service.for_visitor("refine-visitor-0123456789")
out = {}
for count in (1, 30, 100):
    while len(v.user_class_names()) < count:
        i = len(v.user_class_names())
        v.define_class(f"c{i}", combination_attributes(combos[i]))
    service.classes.wait_refined(600)
    t = time.perf_counter()
    v.define_class("extra", combination_attributes(combos[100]))
    add = time.perf_counter() - t
    assert service.classes.wait_refined(600)
    refined = time.perf_counter() - t
    v.delete_class("extra")
    service.classes.wait_refined(600)
    out[count] = {"add_s": add, "refined_after_s": refined}
print(json.dumps(out))
