"""Speed of the app against its targets (issue 6).

* cold start: ``python -m app`` until it is ready (page served, model warm; target ≤ 20 s), then its first
  ``/latent_space`` call;
* predict overhead: ``StudioService.predict`` on a decoded image vs the bare ``Backbone.features`` forward on
  the same image (median, interleaved; target ≤ 15 % extra), and the HTTP ``/predict`` round trip;
* adding a class: ``define_class`` (validation, classifier re-fit, store write; target ≤ 2 s);
* latent tab first render: building the unfiltered figure (done once at start-up) and serving it afterwards
  (target ≤ 2 s);
* the user-class limit (issue 16): adding and deleting a class with the store at ``MAX_USER_CLASSES``
  (target ≤ 2 s), and opening the service (start-up) with 0 and with the maximum number of user classes;
* the worst-case upload (issue 16): time and peak memory of one prediction on the largest and the most
  extreme images, each in a fresh process.

Usage: ``python benchmarks/bench_app.py [--bundle checkpoints/demo-world] [--repeats 40] [--markdown FILE]``;
``--only limits`` runs just the last two (``--markdown`` then writes their table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Measure in-process under the same OpenMP setting the app uses (app/__init__.py sets it before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def cold_start(bundle: Path, runs: int) -> dict[str, list[float]]:
    """Seconds from spawning `python -m app` to its "ready" line (served, model warm); then /latent_space."""
    from gradio_client import Client

    results: dict[str, list[float]] = {"start_to_ready_s": [], "first_latent_space_s": []}
    for _ in range(runs):
        port = free_port()
        with tempfile.TemporaryDirectory() as store:
            command = [sys.executable, "-m", "app", "--bundle", str(bundle), "--port", str(port)]
            command += ["--user-classes", store]
            started = time.perf_counter()
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
            )  # fmt: skip
            try:
                url = f"http://127.0.0.1:{port}/"
                # Ready = the app's own line: served *and* the model warmed up.
                for line in process.stdout:
                    if line.startswith("ACMR studio ready"):
                        break
                else:
                    raise SystemExit(f"python -m app exited with {process.wait()} before it was ready")
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert response.status == 200
                results["start_to_ready_s"].append(time.perf_counter() - started)
                client = Client(url, verbose=False)
                results["first_latent_space_s"].append(
                    timed(lambda client=client: client.predict(api_name="/latent_space"))
                )
            finally:
                process.terminate()
                process.wait(timeout=30)
    return results


def in_process(bundle: Path, repeats: int) -> dict[str, object]:
    from PIL import Image

    from acmr_core.data.images import load_image
    from acmr_core.serving.service import StudioService
    from acmr_core.viz.plots import QueryPoint

    examples = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))
    images = [load_image(path) for path in examples] or [Image.new("RGB", (224, 224), (90, 140, 200))]
    with tempfile.TemporaryDirectory() as store:
        cold = StudioService.open(bundle, user_classes_dir=Path(store) / "cold", warm=False)
        first_figure_s = timed(cold.latent_figure)  # what start-up pays once (precompute)
        served_figure_s = timed(cold.latent_figure)  # what the latent tab pays afterwards

        service = StudioService.open(bundle, user_classes_dir=store)
        backbone = service.backbone
        for image in images[:3]:  # warm both paths (first forwards allocate) before timing
            backbone.features([image])
            service.predict(image)
        bare, full, full_from_file, extra = [], [], [], []
        for index in range(repeats):  # interleaved, so load drift on a shared machine hits both alike
            image = images[index % len(images)]
            bare.append(timed(lambda image=image: backbone.features([image])))
            full.append(timed(lambda image=image: service.predict(image)))
            # The work predict adds to the forward, timed directly (robust to load noise on the forward).
            features = backbone.features([image])[0]
            extra.append(
                timed(lambda image=image: load_image(image))
                + timed(lambda features=features: service.predict_features(features))
            )
            path = examples[index % len(examples)] if examples else None
            if path is not None:
                full_from_file.append(timed(lambda path=path: service.predict(path)))
        prediction = service.predict(images[0])
        query_figure_s = statistics.median(
            timed(lambda: service.latent_figure(query=QueryPoint(prediction.xy, "x"))) for _ in range(5)
        )

        attribute = service.attribute_names[0]
        define_s, delete_s = [], []
        for index in range(5):
            name = f"benchmark class {index}"
            define_s.append(timed(lambda name=name: service.define_class(name, {attribute: 1.0})))
            delete_s.append(timed(lambda name=name: service.delete_class(name)))
    bare_median, full_median = statistics.median(bare), statistics.median(full)
    return {
        "backbone_forward_median_s": bare_median,
        "predict_median_s": full_median,
        "predict_overhead_pct": 100.0 * (full_median / bare_median - 1.0),
        "predict_extra_median_s": statistics.median(extra),
        "predict_extra_pct": 100.0 * statistics.median(extra) / bare_median,  # of the forward median
        "predict_from_file_median_s": statistics.median(full_from_file) if full_from_file else None,
        "ui_query_figure_median_s": query_figure_s,
        "define_class_median_s": statistics.median(define_s),
        "define_class_max_s": max(define_s),
        "delete_class_median_s": statistics.median(delete_s),
        "latent_figure_first_build_s": first_figure_s,
        "latent_figure_served_s": served_figure_s,
        "repeats": repeats,
        "device": str(service.device),
    }


def http_predict(bundle: Path, repeats: int) -> float:
    """Median /predict round trip through gradio_client (upload + queue + predict), for reference."""
    from gradio_client import Client, handle_file

    from app import create_app

    examples = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))
    with tempfile.TemporaryDirectory() as store:
        demo = create_app(bundle=str(bundle), user_classes_dir=Path(store))
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            times = [
                timed(
                    lambda i=i: client.predict(
                        handle_file(str(examples[i % len(examples)])), api_name="/predict"
                    )
                )
                for i in range(repeats)
            ]
        finally:
            demo.close()
    return statistics.median(times)


def user_class_limit(bundle: Path, repeats: int = 3) -> dict[str, float]:
    """Add/delete one class with the store full, and start-up time with 0 vs MAX_USER_CLASSES user classes."""
    import numpy as np

    from acmr_core.serving.service import StudioService
    from acmr_core.serving.user_classes import MAX_USER_CLASSES

    results: dict[str, float] = {"max_user_classes": MAX_USER_CLASSES}
    with tempfile.TemporaryDirectory() as store:
        service = StudioService.open(bundle, user_classes_dir=store, warm=False)  # imports, file cache
        results["open_with_0_s"] = timed(
            lambda: StudioService.open(bundle, user_classes_dir=store, warm=False)
        )
        names = service.attribute_names
        # The same add/delete on an empty store, in the same run: on a shared machine only ratios compare.
        empty_adds = []
        for _ in range(2):
            empty_adds.append(timed(lambda: service.define_class("baseline", {names[0]: 1.0})))
            service.delete_class("baseline")
        results["add_empty_median_s"] = statistics.median(empty_adds)
        rng = np.random.default_rng(0)  # seeded: the same random classes every run
        document = {
            "format": "acmr-user-classes",
            "version": 1,
            "bundle": service.store.bundle_key,
            "classes": [
                {
                    "name": f"random class {index}",
                    "attributes": dict(zip(names, rng.random(len(names)).round(2).tolist(), strict=True)),
                }
                for index in range(MAX_USER_CLASSES - 1)
            ],
        }
        results["import_to_limit_s"] = timed(lambda: service.import_classes(json.dumps(document)))
        adds, deletes = [], []
        for index in range(repeats):  # each add fills the store to the limit; each delete frees one place
            name = f"at the limit {index}"
            adds.append(timed(lambda name=name: service.define_class(name, {names[0]: 1.0})))
            deletes.append(timed(lambda name=name: service.delete_class(name)))
        results["add_at_limit_median_s"] = statistics.median(adds)
        results["add_at_limit_max_s"] = max(adds)
        results["delete_at_limit_median_s"] = statistics.median(deletes)
        results["delete_at_limit_max_s"] = max(deletes)
        service.define_class("last place", {names[0]: 1.0})
        results["open_with_max_s"] = timed(
            lambda: StudioService.open(bundle, user_classes_dir=store, warm=False)
        )
    return results


# Each case runs in a fresh process: its peak RSS is then the peak of that one prediction.
_UPLOAD_PROBE = """
import json, resource, sys, tempfile, time
from acmr_core.errors import ImageError
from acmr_core.serving.service import StudioService
service = StudioService.open(sys.argv[1], user_classes_dir=tempfile.mkdtemp(), warm=False)
service.predict(sys.argv[3])  # a normal image first: model set up, the baseline peak
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    outcome = "predicted " + service.predict(sys.argv[2]).ranked[0].name
except ImageError as error:
    outcome = "refused: " + str(error)
seconds = time.perf_counter() - started
extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"seconds": seconds, "extra_peak_mb": extra_mb, "outcome": outcome}))
"""


def worst_case_uploads(bundle: Path) -> list[dict[str, object]]:
    """Time and extra peak memory of one prediction per extreme image (compressed to a few KB each)."""
    from acmr_core.data.images import DEFAULT_MAX_PIXELS, MAX_ASPECT_RATIO
    from tests.test_app_api import huge_png  # the API test's bomb writer (1-bit PNG, written row by row)

    short_side = int((DEFAULT_MAX_PIXELS / MAX_ASPECT_RATIO) ** 0.5)  # the widest strip under the pixel cap
    cases = {
        "64000×1 strip (issue 16: 57 s, 17.7 GB before)": (64_000, 1),
        "16000×1 strip (issue 16: 9 s, 5.2 GB before)": (16_000, 1),
        f"widest accepted strip at the pixel cap, {short_side * MAX_ASPECT_RATIO}×{short_side}": (
            short_side * MAX_ASPECT_RATIO,
            short_side,
        ),
        "8000×8000 (64 MP, the pixel cap)": (8000, 8000),
    }
    example = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))[0]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, (width, height) in cases.items():
            path = Path(folder) / f"{width}x{height}.png"
            path.write_bytes(huge_png(width, height))
            command = [sys.executable, "-c", _UPLOAD_PROBE, str(bundle), str(path), str(example)]
            output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
            probe = json.loads(output.stdout.strip().splitlines()[-1])
            rows.append({"case": label, "file_kb": path.stat().st_size / 1024, **probe})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def limits_markdown(command: str, limit: dict[str, float], uploads: list[dict[str, object]]) -> str:
    """The table of the user-class limit and worst-case upload measurements (issue 16)."""
    maximum = int(limit["max_user_classes"])
    lines = [
        "## User-class limit and worst-case uploads (issue 16)",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        "(shared with other jobs).",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
        f"| add a class with the store at the limit ({maximum} user classes), median / max | "
        f"{limit['add_at_limit_median_s']:.2f} s / {limit['add_at_limit_max_s']:.2f} s | ≤ 2 s |",
        f"| add a class to an empty store (same run, for the ratio) | {limit['add_empty_median_s']:.2f} s "
        f"(at the limit: {limit['add_at_limit_median_s'] / limit['add_empty_median_s']:.1f}× this) | |",
        f"| delete a class at the limit, median / max | {limit['delete_at_limit_median_s']:.2f} s / "
        f"{limit['delete_at_limit_max_s']:.2f} s | ≤ 2 s |",
        f"| start-up (open the bundle, no warm-up) with 0 user classes | {limit['open_with_0_s']:.2f} s | |",
        f"| start-up with {maximum} user classes (the most a store can hold) | "
        f"{limit['open_with_max_s']:.2f} s | bounded |",
        f"| import {maximum - 1} classes in one file (one re-fit) | {limit['import_to_limit_s']:.2f} s | |",
        "",
        "| upload (a PNG of a few KB) | file | time | extra peak memory | outcome |",
        "|---|---|---|---|---|",
        *[
            f"| {row['case']} | {row['file_kb']:.1f} KB | {row['seconds'] * 1000:.1f} ms | "
            f"{row['extra_peak_mb']:.0f} MB | {str(row['outcome'])[:90]} |"
            for row in uploads
        ],
        "",
    ]
    return "\n".join(lines)


def markdown(command: str, cold: dict[str, list[float]], local: dict[str, object], http_s: float) -> str:
    start = statistics.median(cold["start_to_ready_s"])
    runs = ", ".join(f"{value:.1f}" for value in cold["start_to_ready_s"])
    ms = {key: f"{value * 1000:.1f} ms" for key, value in local.items() if key.endswith("_s") and value}
    rows = [
        ("cold start → ready (`python -m app`: served and warm)", f"{start:.1f} s (runs: {runs})", "≤ 20 s"),
        ("bare backbone forward, 1 image (median)", ms["backbone_forward_median_s"], ""),
        ("`StudioService.predict`, same decoded image (median)", ms["predict_median_s"], ""),
        (
            "predict overhead over the bare forward (end to end)",
            f"{local['predict_overhead_pct']:+.1f} %",
            "≤ 15 %",
        ),
        (
            "work predict adds to the forward, timed directly (median)",
            f"{ms['predict_extra_median_s']} = {local['predict_extra_pct']:.1f} % of a forward",
            "≤ 15 %",
        ),
        ("predict from a PNG file (decode included, median)", ms.get("predict_from_file_median_s", "-"), ""),
        ("HTTP `/predict` round trip via gradio_client (median)", f"{http_s * 1000:.0f} ms", ""),
        ("UI only: latent plot with the uploaded image (median)", ms["ui_query_figure_median_s"], ""),
        (
            "define a class (validate + re-fit + durable write), median / max",
            f"{local['define_class_median_s']:.2f} s / {local['define_class_max_s']:.2f} s",
            "≤ 2 s",
        ),
        ("delete a class (re-fit + write), median", f"{local['delete_class_median_s']:.2f} s", ""),
        ("latent tab: first figure build (once, at start-up)", ms["latent_figure_first_build_s"], "≤ 2 s"),
        (
            "latent tab: figure served after start-up",
            f"{local['latent_figure_served_s'] * 1000:.1f} ms",
            "≤ 2 s",
        ),
        (
            "latent tab: first HTTP `/latent_space` after a cold start",
            f"{statistics.median(cold['first_latent_space_s']):.2f} s",
            "≤ 2 s",
        ),
    ]
    lines = [
        "# App benchmarks",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other jobs), device {local['device']}, {local['repeats']} repeats.",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
        *[f"| {name} | {value} | {target} |" for name, value, target in rows],
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "checkpoints" / "demo-world")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--only", choices=["limits"], default=None, help="run only the issue-16 limits")
    args = parser.parse_args()
    command = "python benchmarks/bench_app.py " + " ".join(sys.argv[1:])
    if args.only == "limits":
        table = limits_markdown(
            command.strip(), user_class_limit(args.bundle), worst_case_uploads(args.bundle)
        )
        print(table)
        if args.markdown is not None:
            args.markdown.write_text(table, encoding="utf-8")
        return 0
    cold = cold_start(args.bundle, args.cold_runs)
    local = in_process(args.bundle, args.repeats)
    http_s = http_predict(args.bundle, max(5, args.repeats // 4))
    print(json.dumps({"cold": cold, "in_process": local, "http_predict_median_s": http_s}, indent=2))
    table = markdown(command.strip(), cold, local, http_s)
    print(table)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
