"""Cost of decoding high-depth uploads (issue 27 D1): 16-bit PNG, float32 and int32 TIFF at the pixel cap.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/high_depth_decode.py [--side 7999] [--runs 3]
        [--markdown FILE]

Each case writes one ``side × side`` image (a compressed gradient: the 16-bit PNG is about 140 KB) and
loads it with :func:`acmr_core.data.images.load_image` from its path, as the app does with an upload, in a
fresh process per run: wall time of the call and the rise of peak RSS (``resource.getrusage``) over the
process after its imports. Targets: ≤ 500 MB and ≤ 3 s for the 16-bit PNG. An 8-bit RGB PNG of the same size
is measured as the reference (what any 64 MP photo costs). With ``--bundle`` (default: the demo world, where
it exists) each image is also sent through a whole prediction (``StudioService.predict``), measured as the
worst-case uploads of ``bench_app.py`` are: extra peak RSS over one normal prediction, in a fresh process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# One fresh process per run: its peak RSS is then the peak of that one decode.
_PROBE = """
import json, resource, sys, time
from acmr_core.data.images import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
image = load_image(sys.argv[1])
seconds = time.perf_counter() - started
rise_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"seconds": seconds, "rss_rise_mb": rise_mb, "size": image.size, "mode": image.mode}))
"""


def case_names(side: int) -> dict[str, str]:
    return {
        f"16-bit grey PNG {side}×{side} (mode I;16)": "g16.png",
        f"float32 TIFF {side}×{side} (mode F, deflate)": "f32.tif",
        f"int32 TIFF {side}×{side} (mode I, deflate)": "i32.tif",
        f"reference: 8-bit RGB PNG {side}×{side}": "rgb8.png",
    }


def write_cases(folder: Path, side: int) -> None:
    """The benchmark images: a gradient 0…65535 across the width, which compresses to a few hundred KB.

    Run in its own process (``--write-to``): Linux carries a parent's peak RSS over to the processes it
    starts, so the measuring parent must never hold these arrays.
    """
    import numpy as np
    from PIL import Image

    gradient = np.broadcast_to(np.arange(side, dtype=np.uint32) * 65535 // (side - 1), (side, side))
    for name, dtype, params in (
        ("g16.png", np.uint16, {}),
        ("f32.tif", np.float32, {"compression": "tiff_deflate"}),
        ("i32.tif", np.int32, {"compression": "tiff_deflate"}),
    ):
        Image.fromarray(np.ascontiguousarray(gradient.astype(dtype))).save(folder / name, **params)
    rgb = np.repeat((gradient >> 8).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(rgb).save(folder / "rgb8.png")


def probe(arguments: list[str]) -> dict[str, object]:
    """Run one probe script in a fresh process; its last output line is its JSON result."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    output = subprocess.run(
        [sys.executable, "-c", *arguments],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=environment,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def measure(path: Path, runs: int, bundle: Path | None) -> dict[str, object]:
    decodes = [probe([_PROBE, str(path)]) for _ in range(runs)]
    row: dict[str, object] = {
        "file_kb": path.stat().st_size / 1024,
        "median_s": statistics.median(run["seconds"] for run in decodes),
        "max_s": max(run["seconds"] for run in decodes),
        "rss_rise_mb": max(run["rss_rise_mb"] for run in decodes),
        "result": f"{decodes[0]['mode']} {decodes[0]['size'][0]}×{decodes[0]['size'][1]}",
    }
    if bundle is not None:
        from benchmarks.bench_app import _UPLOAD_PROBE  # the issue-16 worst-case upload probe, unchanged

        example = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))[0]
        predictions = [probe([_UPLOAD_PROBE, str(bundle), str(path), str(example)]) for _ in range(runs)]
        row["predict_median_s"] = statistics.median(run["seconds"] for run in predictions)
        row["predict_extra_mb"] = max(run["extra_peak_mb"] for run in predictions)
        row["outcome"] = predictions[0]["outcome"]
    return row


def markdown(command: str, runs: int, rows: dict[str, dict[str, object]]) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared with other jobs); {runs} fresh processes per case, `OMP_NUM_THREADS=1`.",
        "",
        "| upload | file | `load_image`: time, median (max) | `load_image`: peak RSS rise | result "
        "| whole prediction: time (median) | whole prediction: extra peak memory |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {label} | {row['file_kb']:,.0f} KB | {row['median_s']:.2f} s ({row['max_s']:.2f} s) | "
            f"{row['rss_rise_mb']:.0f} MB | {row['result']} | "
            + (
                f"{row['predict_median_s']:.2f} s | {row['predict_extra_mb']:.0f} MB |"
                if "predict_median_s" in row
                else "not run | not run |"
            )
            for label, row in rows.items()
        ],
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--side", type=int, default=7999, help="image side; 7999² is just under the 64 MP cap"
    )
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per case")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=REPO_ROOT / "checkpoints" / "demo-world",
        help="'' skips the predictions",
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--write-to", type=Path, default=None, help=argparse.SUPPRESS)  # internal, see above
    args = parser.parse_args()
    if args.write_to is not None:
        write_cases(args.write_to, args.side)
        return 0
    command = "OMP_NUM_THREADS=1 python benchmarks/high_depth_decode.py " + " ".join(sys.argv[1:])
    bundle = args.bundle if (args.bundle / "manifest.json").exists() else None
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        writer = [sys.executable, __file__, "--side", str(args.side), "--write-to", folder]
        subprocess.run(writer, check=True, cwd=REPO_ROOT)
        for label, name in case_names(args.side).items():
            rows[label] = measure(Path(folder) / name, args.runs, bundle)
            print(json.dumps({"case": label, **rows[label]}), flush=True)
    table = markdown(command.strip(), args.runs, rows)
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
