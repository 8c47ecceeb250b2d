"""Live preview of a draft class (issue 25): what the server does for each edit of the draft's attributes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/draft_preview.py [--bundle checkpoints/demo-world]
        [--edits 60] [--browser-edits 12] [--json]

One edit = ``StudioService.preview_class`` (validate, semantic encoder, map placement, distances to every
class and to the last image's latent) + ``latent_figure(query=..., draft=...)`` + the figure's JSON (what
Gradio sends), exactly the app's ``on_draft`` handler minus the HTTP hop. The draft walks through
``--edits`` attribute changes (one attribute toggled per edit, seeded), as a visitor editing would. Measured
twice: alone, and with a second thread predicting an example image in a loop (a busy server). The service
has one user class (so the snapshot is a visitor's, not the bundle's cached one).

Then in the browser, where chromium is installed (``--browser-edits 0`` skips it): ``python -m app`` is
served (benchmarks/visitor_classes.py's set-up) and Playwright toggles one attribute at a time in *Define a
class*, timing from the key press that applies it to the draft's point having moved in the rendered plotly
plot (HTTP, queue, handler, JSON, the browser's redraw).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "n": len(ordered),
        "median_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max_s": ordered[-1],
    }


def edits(names: list[str], count: int, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    current = {name: 0.0 for name in names}
    current[names[0]] = 1.0
    walk = []
    for _ in range(count):
        name = names[int(rng.integers(len(names)))]
        current[name] = 1.0 - current[name]
        if not any(current.values()):
            current[name] = 1.0
        walk.append(dict(current))
    return walk


def complete_drafts(names: list[str], count: int, seed: int = 1) -> list[dict[str, float]]:
    """Drafts with one value in every attribute group, each new: the separability guard (issue 32) judges
    each one, fitting the classifier row its add would train (the walk above is mostly incomplete drafts)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split(":")[0], []).append(name)
    drafts, seen = [], set()
    while len(drafts) < count and len(seen) < 10 * count:
        chosen = tuple(values[int(rng.integers(len(values)))] for values in groups.values())
        if chosen not in seen:
            seen.add(chosen)
            drafts.append({name: float(name in chosen) for name in names})
    return drafts


def measure(service, walk, query, latent) -> list[float]:
    from acmr_core.viz.plots import QueryPoint

    times = []
    for attributes in walk:
        started = time.perf_counter()
        preview = service.preview_class(attributes, latent)
        figure = service.latent_figure(query=query, draft=QueryPoint(preview.xy, "my draft"), photos=False)
        figure.to_json()
        times.append(time.perf_counter() - started)
    return times


DRAFT_POINT_JS = """() => { const plot = document.querySelector('#draft-plot .js-plotly-plot');
    const draft = plot && plot.data ? plot.data.find((trace) => trace.name === 'your draft') : null;
    return draft ? JSON.stringify([draft.x[0], draft.y[0]]) : null; }"""
TOGGLED = ["colour: red", "shape: circle", "size: small", "pattern: striped", "count: three",
           "background: dark", "colour: blue", "shape: square", "count: one", "pattern: plain",
           "background: light", "size: large", "colour: green"]  # fmt: skip


def browser_round_trips(bundle: Path, edits: int) -> dict[str, float]:
    from playwright.sync_api import expect, sync_playwright

    from benchmarks.visitor_classes import served_app

    times = []
    with (
        tempfile.TemporaryDirectory() as folder,
        served_app(bundle, Path(folder)) as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--headless"])
        page = browser.new_context(viewport={"width": 1400, "height": 1300}).new_page()
        page.goto(url)
        expect(page.get_by_text("ACMR zero-shot studio").first).to_be_visible(timeout=60_000)
        page.get_by_role("tab", name="Define a class").click()
        page.wait_for_timeout(1000)
        for name in TOGGLED[: edits + 1]:
            before = page.evaluate(DRAFT_POINT_JS)
            box = page.locator("#attribute-toggles input").first
            box.click()
            box.fill(name)
            started = time.perf_counter()
            box.press("Enter")
            page.wait_for_function(f"({DRAFT_POINT_JS})() !== {json.dumps(before)}", timeout=30_000)
            times.append(time.perf_counter() - started)
            box.press("Escape")
            page.wait_for_timeout(300)
        browser.close()
    return percentiles(times[1:])  # the first draws the map for the first time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "checkpoints/demo-world")
    parser.add_argument("--edits", type=int, default=60)
    parser.add_argument("--browser-edits", type=int, default=12, help="0: skip the browser part")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from acmr_core.serving.service import StudioService
    from acmr_core.viz.plots import QueryPoint

    image = sorted((REPO / "assets/examples").glob("*.png"))[0]
    with tempfile.TemporaryDirectory() as folder:
        service = StudioService.open(args.bundle, device="cpu", user_classes_dir=folder, per_visitor=True)
        visitor = service.for_visitor("benchmark-visitor-0123456789")
        visitor.define_class("my class", {visitor.attribute_names[0]: 1.0})
        prediction = visitor.predict(image)
        query = QueryPoint(prediction.xy, prediction.ranked[0].name)
        walk = edits(visitor.attribute_names, args.edits)
        measure(visitor, walk[:3], query, prediction.latent)  # first calls set things up
        alone = measure(visitor, walk, query, prediction.latent)
        judged = measure(visitor, complete_drafts(visitor.attribute_names, args.edits // 3), query, None)
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                visitor.predict(image)

        busy = threading.Thread(target=load, daemon=True)
        busy.start()
        try:
            loaded = measure(visitor, walk, query, prediction.latent)
        finally:
            stop.set()
            busy.join(60)
        service.store.close()
    result = {
        "alone": percentiles(alone),
        "beside_predictions": percentiles(loaded),
        "complete_new_drafts_judged": percentiles(judged),
        "browser": browser_round_trips(args.bundle, args.browser_edits)
        if args.browser_edits and Path("/usr/bin/chromium").is_file()
        else None,
        "load": os.getloadavg(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(result, indent=2) if args.json else json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
