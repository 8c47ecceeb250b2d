"""A benchmark model served by the studio (issue 36): build time of ``acmr bundle --run`` and the latent tab's
first render after start-up, on synthetic CUB and AWA2 at their real sizes (res101.mat layout: real xlsa17
attributes, class names and splits, synthetic 2048-d features; 4 731 and 13 795 test images).

Per dataset:

1. the synthetic data (``python -m acmr_core.data.synthetic``) and ``acmr train --seeds 0 --epochs E`` — the
   training is not a target (a few epochs keep the benchmark short; the bundle does not depend on how long
   the model trained);
2. ``acmr bundle --run`` (UMAP over every test image), timed: target ≤ 120 s;
3. ``acmr serve --bundle`` until its "ready" line, then, in chromium (Playwright): open the page, open the
   *Latent space* tab, and wait until every test image is drawn. The latent tab's first render is the time
   from opening the page to that (targets: ≤ 2 s for CUB, ≤ 4 s for AWA2); the time from the tab click alone,
   and one ``/latent_space`` HTTP call (gradio_client), are reported beside it.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_features_bundle.py --work /tmp/bench36
[--datasets CUB AWA2] [--epochs 2] [--markdown FILE]``. Data and runs in ``--work`` are reused when present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
TARGET_RENDER_S = {"CUB": 2.0, "AWA2": 4.0}
TARGET_BUILD_S = 120.0


def acmr(*args: str) -> float:
    """Run ``acmr ARGS`` in a fresh process; its wall-clock seconds."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-m", "acmr_core", *args], check=True, cwd=REPO_ROOT, env=env)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(work: Path, dataset: str, epochs: int) -> tuple[Path, Path, float]:
    """The synthetic data and a trained run (reused when present); the training's seconds (0 if reused)."""
    data_root, run = work / "data", work / f"run-{dataset.lower()}"
    if not (data_root / dataset / "res101.mat").is_file():
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        command = [
            sys.executable,
            "-m",
            "acmr_core.data.synthetic",
            "--dataset",
            dataset,
            "--out",
            str(data_root),
        ]
        subprocess.run(command, check=True, cwd=REPO_ROOT, env=env)
    trained = 0.0
    if not (run / "metrics.json").is_file():
        trained = acmr(
            "train", "--dataset", dataset, "--data-root", str(data_root), "--out", str(run), "--seeds", "0",
            "--epochs", str(epochs), "--device", "cpu", "--no-progress",
        )  # fmt: skip
    return data_root, run, trained


def drawn_js(plot: str, count: int) -> str:
    """True once plot ``plot`` holds ``count`` photos and has drawn at least that many points."""
    return (
        f"() => {{ const plot = document.querySelector('#{plot} .js-plotly-plot');"
        " if (!plot || !plot._fullData) return false;"
        " const photos = plot._fullData.filter(t => /class images$/.test(t.name));"
        f" return photos.reduce((n, t) => n + t._length, 0) === {count}"
        f" && plot.querySelectorAll('g.trace path.point').length >= {count}; }}"
    )


def first_render(bundle: Path, store: Path) -> dict[str, float]:
    """Start ``acmr serve``; the seconds to "ready", then to the latent tab drawn in chromium, and one HTTP
    ``/latent_space``."""
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    port = free_port()
    command = [
        sys.executable, "-m", "acmr_core", "serve", "--bundle", str(bundle), "--port", str(port),
        "--checkpoints", str(store / "none"), "--device", "cpu", "--user-classes", str(store),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        for line in process.stdout:
            if line.startswith("ACMR studio ready"):
                break
        else:
            raise SystemExit(f"acmr serve exited with {process.wait()} before it was ready")
        result = {"start_to_ready_s": time.perf_counter() - started}
        url = f"http://127.0.0.1:{port}/"
        count = len(json.loads((bundle / "latent.json").read_text())["image_ids"])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--headless"]
            )
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            # A visitor's view: open the page, click the tab as soon as it shows, wait for every point.
            page = context.new_page()
            opened = time.perf_counter()
            page.goto(url)
            tab = page.get_by_role("tab", name="Latent space").first
            tab.wait_for(timeout=60_000)
            tab.click()
            page.wait_for_function(drawn_js("latent-plot", count), timeout=120_000, polling=50)
            result["page_open_to_latent_drawn_s"] = time.perf_counter() - opened
            # The tab alone: a second page, once its load events have been answered (the Predict tab's map,
            # the same figure, is drawn), then the click.
            page = context.new_page()
            page.goto(url)
            page.wait_for_function(drawn_js("predict-plot", count), timeout=120_000, polling=50)
            tab = page.get_by_role("tab", name="Latent space").first
            clicked = time.perf_counter()
            tab.click()
            page.wait_for_function(drawn_js("latent-plot", count), timeout=120_000, polling=50)
            result["tab_click_to_latent_drawn_s"] = time.perf_counter() - clicked
            browser.close()
        client = Client(url, verbose=False)
        http_started = time.perf_counter()
        figure = client.predict(api_name="/latent_space")
        result["http_latent_space_s"] = time.perf_counter() - http_started
        result["figure_json_mb"] = len(figure["plot"]) / 1e6
        return result
    finally:
        process.terminate()
        process.wait(timeout=30)


def bench(work: Path, dataset: str, epochs: int) -> dict[str, Any]:
    _, run, trained_s = prepare(work, dataset, epochs)
    bundle = work / f"{dataset.lower()}-seed0"
    build_s = acmr("bundle", "--run", str(run), "--out", str(bundle), "--device", "cpu")
    results = json.loads((bundle / "results.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())["per_seed"][0]
    store = work / f"classes-{dataset.lower()}"
    store.mkdir(exist_ok=True)
    return {
        "dataset": dataset,
        "test_images": len(results["images"]["predicted"]),
        "train_s": trained_s,
        "bundle_build_s": build_s,
        "U_S_H": [round(results["metrics"][key], 2) for key in ("U", "S", "H")],
        "metrics_json_U_S_H": [round(metrics[key], 2) for key in ("U", "S", "H")],
        **first_render(bundle, store),
    }


def markdown(command: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"Measured {dt.date.today()} on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs, shared), "
        f"`{command}`.",
        "",
        "| dataset | test images | `acmr bundle --run` (target ≤ 120 s) | start → ready | latent tab: page "
        "open → every point drawn (target) | tab click → drawn | HTTP `/latent_space` | figure JSON | "
        "U / S / H (results.json = metrics.json) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = TARGET_RENDER_S[row["dataset"]]
        met = "✓" if row["page_open_to_latent_drawn_s"] <= target else "✗"
        build = "✓" if row["bundle_build_s"] <= TARGET_BUILD_S else "✗"
        same = "=" if row["U_S_H"] == row["metrics_json_U_S_H"] else "≠"
        lines.append(
            f"| {row['dataset']} | {row['test_images']:,} | {row['bundle_build_s']:.0f} s {build} | "
            f"{row['start_to_ready_s']:.1f} s | {row['page_open_to_latent_drawn_s']:.2f} s "
            f"(≤ {target:g} s) {met} "
            f"| {row['tab_click_to_latent_drawn_s']:.2f} s | {row['http_latent_space_s']:.2f} s | "
            f"{row['figure_json_mb']:.1f} MB | {' / '.join(f'{v:.2f}' for v in row['U_S_H'])} {same} "
            f"{' / '.join(f'{v:.2f}' for v in row['metrics_json_U_S_H'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the data, runs and bundles")
    parser.add_argument("--datasets", nargs="+", default=["CUB", "AWA2"], choices=sorted(TARGET_RENDER_S))
    parser.add_argument("--epochs", type=int, default=2, help="ACMR epochs of the training run (default 2)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="also time the page of this bundle (e.g. the demo's)"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        rows.append(bench(args.work, dataset, args.epochs))
        print(json.dumps(rows[-1]), flush=True)
    table = markdown(" ".join(["python", *sys.argv]), rows)
    if args.baseline is not None:
        store = args.work / "classes-baseline"
        store.mkdir(exist_ok=True)
        base = first_render(args.baseline, store)
        print(json.dumps(base), flush=True)
        table += (
            f"\nSame run, the page of `{args.baseline}` for comparison: start → ready "
            f"{base['start_to_ready_s']:.1f} s, page open → every point drawn "
            f"{base['page_open_to_latent_drawn_s']:.2f} s, tab click → drawn "
            f"{base['tab_click_to_latent_drawn_s']:.2f} s, HTTP `/latent_space` "
            f"{base['http_latent_space_s']:.2f} s.\n"
        )
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
