"""Speed of the app against its targets (issue 6).

* cold start: ``python -m app`` until it is ready (page served, model warm; target ≤ 20 s), then its first
  ``/latent_space`` call;
* predict overhead: ``StudioService.predict`` on a decoded image vs the bare ``Backbone.features`` forward on
  the same image (median, interleaved; target ≤ 15 % extra), and the HTTP ``/predict`` round trip;
* adding a class: ``define_class`` (validation, classifier re-fit, store write; target ≤ 2 s);
* latent tab first render: building the unfiltered figure (done once at start-up) and serving it afterwards
  (target ≤ 2 s).

Usage: ``python benchmarks/bench_app.py [--bundle checkpoints/demo-world] [--repeats 40] [--markdown FILE]``
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

    from acmr_core.images import load_image
    from acmr_core.plots import QueryPoint
    from acmr_core.service import StudioService

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
    args = parser.parse_args()
    command = "python benchmarks/bench_app.py " + " ".join(sys.argv[1:])
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
