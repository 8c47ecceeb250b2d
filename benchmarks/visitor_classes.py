"""Per-visitor classes through the served app (HTTP, ``gradio_client``): fast edits with 100 classes, and
20 visitors editing in parallel while predictions are answered. Issue 24.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/visitor_classes.py [--bundle checkpoints/demo-world]
        [--classes 100] [--repeats 10] [--visitors 20] [--per-visitor 5] [--json]

``python -m app`` is started in a subprocess on a free loopback port with a fresh ``--user-classes``
folder (each visitor their own classes, as served to the public). Each ``gradio_client.Client`` is one
visitor (its session). Two measurements, each with one more client predicting an example image in a loop
the whole time (the load, and the predictions whose latency is reported):

* **edits with a full visitor**: one visitor defines ``--classes`` classes (demo-world attribute
  combinations that are no class of the bundle), then adds and deletes one more, ``--repeats`` times each;
  the time of each call, end to end (HTTP, queue, service);
* **parallel visitors**: ``--visitors`` clients, one thread each, each add ``--per-visitor`` classes (the
  same names for everyone: a name clash between visitors would show); then every visitor's catalog must hold
  exactly its own ones.

Prediction latencies (p50 / p95 / max) are from the loop client, for each phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from acmr_core.data.demo_world import fresh_combinations

REPO = Path(__file__).resolve().parent.parent


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_s": pick(0.5), "p95_s": pick(0.95), "max_s": ordered[-1]}


@contextlib.contextmanager
def served_app(bundle: Path, folder: Path) -> Iterator[str]:
    from tests.test_app_api import free_port

    port = free_port()
    log = (folder / "app.log").open("w")
    command = [sys.executable, "-m", "app", "--bundle", str(bundle), "--port", str(port),
               "--user-classes", str(folder / "visitors")]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while "ACMR studio ready" not in (folder / "app.log").read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the app did not start:\n" + (folder / "app.log").read_text())
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


class PredictLoop:
    """One client predicting an example image over and over, recording each latency, until stopped."""

    def __init__(self, url: str, image: Path) -> None:
        from gradio_client import Client, handle_file

        self._client, self._file = Client(url, verbose=False), handle_file(str(image))
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.times.append(timed(lambda: self._client.predict(self._file, api_name="/predict")))

    def __enter__(self) -> PredictLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(120)


def attributes_json(values: dict[str, str]) -> str:
    return json.dumps({f"{group}: {value}": 1 for group, value in values.items()})


def full_visitor_edits(url: str, combos: list[dict[str, str]], classes: int, repeats: int) -> dict[str, Any]:
    from gradio_client import Client

    client = Client(url, verbose=False)
    for index in range(classes):
        client.predict(f"class {index}", attributes_json(combos[index]), api_name="/define_class")
    adds, deletes = [], []
    extra = attributes_json(combos[classes])
    for _ in range(repeats):
        adds.append(timed(lambda: client.predict("one more", extra, api_name="/define_class")))
        deletes.append(timed(lambda: client.predict("one more", api_name="/delete_class")))
    users = [c for c in client.predict(api_name="/catalog")["classes"] if c["kind"] == "user"]
    assert len(users) == classes, len(users)
    return {
        "add": percentiles(adds),
        "delete": percentiles(deletes),
        "add_median_s": statistics.median(adds),
        "delete_median_s": statistics.median(deletes),
    }


def parallel_visitors(url: str, combos: list[dict[str, str]], visitors: int, each: int) -> dict[str, Any]:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(visitors)]
    times: list[float] = []
    errors: list[str] = []

    def visitor(index: int) -> None:
        try:
            for k in range(each):
                combo = attributes_json(combos[(index * each + k) % len(combos)])
                times.append(
                    timed(
                        lambda k=k, c=combo: clients[index].predict(f"mine {k}", c, api_name="/define_class")
                    )
                )
        except Exception as error:  # reported; the run fails below
            errors.append(f"visitor {index}: {error}")

    started = time.perf_counter()
    threads = [threading.Thread(target=visitor, args=(index,)) for index in range(visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    wall = time.perf_counter() - started
    exact = 0
    for index, client in enumerate(clients):
        users = [c for c in client.predict(api_name="/catalog")["classes"] if c["kind"] == "user"]
        expected = {f"mine {k}": json.loads(attributes_json(combos[(index * each + k) % len(combos)]))
                    for k in range(each)}  # fmt: skip
        got = {c["name"]: {a: v for a, v in c["attributes"].items() if v} for c in users}
        exact += got == expected
    return {"visitors": visitors, "each": each, "wall_s": wall, "add": percentiles(times),
            "visitors_with_exactly_their_own": exact, "errors": errors}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "checkpoints/demo-world")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--per-visitor", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from acmr_core.bundle.format import load_bundle
    from acmr_core.data.demo_world import default_world

    known = [dict(item.values) for item in default_world().classes]
    combos = fresh_combinations(known, args.classes + 1, seed=0)
    image = sorted((REPO / "assets/examples").glob("*.png"))[0]
    load_bundle(args.bundle, device="cpu")  # a broken bundle fails here, not in the subprocess
    with tempfile.TemporaryDirectory() as folder, served_app(args.bundle, Path(folder)) as url:
        with PredictLoop(url, image) as loop:
            edits = full_visitor_edits(url, combos, args.classes, args.repeats)
        edits["predict"] = percentiles(loop.times)
        with PredictLoop(url, image) as loop:
            parallel = parallel_visitors(url, combos, args.visitors, args.per_visitor)
        parallel["predict"] = percentiles(loop.times)
    result = {"load": os.getloadavg(), "full_visitor": edits, "parallel": parallel,
              "omp_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else json.dumps(result))
    return 0 if not parallel["errors"] and parallel["visitors_with_exactly_their_own"] == args.visitors else 1


if __name__ == "__main__":
    raise SystemExit(main())
