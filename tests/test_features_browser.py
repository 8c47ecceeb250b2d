"""The four tabs in a real browser for a features-only bundle (issue 36): `acmr serve --bundle DIR` on a
bundle from `acmr bundle --run` (synthetic CUB in the res101.mat layout), driven by Playwright with chromium.

Predict says in one line that the model reads features and answers a picked test image; Define a class lists
the test images nearest to the draft; Latent space draws every test image; Results shows the test split's
U / S / H as metrics.json has them and each class's confusions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.features_fixtures import FeaturesRun, features_run
from tests.test_app_api import PORT_ATTEMPTS, REPO_ROOT, free_port
from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS, START_TIMEOUT_S

pytestmark = [pytest.mark.slow, pytest.mark.browser]
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FeaturesRun, str]]:
    """`acmr serve --bundle DIR` in a subprocess on a free loopback port: ``(built, url)``."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed")
    built = features_run(tmp_path_factory, "CUB")
    logs = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO_ROOT)}
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        command = [
            sys.executable, "-m", "acmr_core", "serve", "--bundle", str(built.bundle), "--port", str(port),
            "--checkpoints", str(logs / "none"), "--device", "cpu", "--user-classes", str(logs / "classes"),
        ]  # fmt: skip
        log_path = logs / f"serve-{attempt}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            if _ready(process, log_path, url):
                yield built, url
                return
            if "already in use" not in log_path.read_text():
                raise AssertionError(f"acmr serve exited with {process.returncode}: {log_path.read_text()}")
        finally:
            process.terminate()
            process.wait(timeout=20)
    raise AssertionError("acmr serve found no free port")


def _ready(process: subprocess.Popen, log_path: Path, url: str) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if "ACMR studio ready in " in log_path.read_text(errors="replace"):
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status == 200
        time.sleep(0.5)
    raise AssertionError(f"acmr serve did not answer on {url} within {START_TIMEOUT_S} s")


def _tab(page, name: str) -> None:
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=name).first
    expect(tab).to_be_visible(timeout=30_000)
    tab.click()


def _choose(page, elem_id: str, option: str | None = None) -> None:
    """Pick ``option`` (typed, then clicked) or the first option of a Gradio dropdown."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    if option is not None:
        box.fill(option)
    options = page.locator(f"#{elem_id} [data-testid=dropdown-option]")
    chosen = options.first if option is None else options.filter(has_text=option).first
    chosen.click(timeout=30_000)  # waits for the options (filled in by the server after the class is picked)


#: How many photos the latent plot holds (its plotly traces of class images), once it is drawn.
PHOTOS_JS = (
    "() => { const plot = document.querySelector('#latent-plot .js-plotly-plot');"
    " if (!plot || !plot._fullData) return null;"
    " const photos = plot._fullData.filter(t => /class images$/.test(t.name));"
    " return photos.reduce((n, t) => n + t._length, 0) || null; }"
)
#: The "kind" cells of the results table's rendered rows.
KIND_COLUMN_JS = (
    "() => [...document.querySelectorAll('#results-table [role=gridcell][data-col=\"1\"]')]"
    ".map(cell => cell.innerText.trim()).filter(Boolean)"
)


def _kind_column(page) -> list[str]:
    return page.evaluate(KIND_COLUMN_JS)


def test_the_four_tabs_of_a_features_only_model(served: tuple[FeaturesRun, str], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    built, url = served
    data = built.data()
    metrics = json.loads((built.run / "metrics.json").read_text())["per_seed"][0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport=DESKTOP).new_page()
        page.goto(url)

        # Predict: one line says the model reads features; a picked test image gets the upload's answer view.
        expect(page.locator("#features-only-notice")).to_contain_text(
            "reads precomputed image features", timeout=60_000
        )
        _choose(page, "pick-class", "Laysan Albatross")
        _choose(page, "pick-image")
        expect(page.locator("#sees-summary")).to_contain_text("Prediction:", timeout=30_000)
        top = page.locator("#top-classes")
        expect(top).to_contain_text("·")
        # γ applies to the picked image as to an upload: the answer read at one extreme changes at the other.
        page.get_by_text("Advanced: balance").click()
        gamma = page.locator("#gamma input[type=number]")
        before = top.inner_text()
        gamma.fill("-5")
        gamma.press("Enter")
        expect(top).not_to_have_text(before, timeout=30_000)
        page.wait_for_timeout(1000)
        favouring_seen = top.inner_text()
        gamma.fill("5")
        gamma.press("Enter")
        expect(top).not_to_have_text(favouring_seen, timeout=30_000)
        expect(page.locator("#sees-summary")).to_contain_text("Prediction:")  # still the picked image's

        # Define a class: the draft lists the test images nearest to it.
        _tab(page, "Define a class")
        _choose(page, "attribute-toggles", data.attribute_names[0])
        expect(page.locator("#draft-preview")).to_contain_text("Nearest test images", timeout=30_000)

        # Latent space: every test image is a point.
        _tab(page, "Latent space")
        photos = page.wait_for_function(PHOTOS_JS, timeout=30_000).json_value()
        assert photos == data.test_seen.size + data.test_unseen.size
        # Every photo and every class's description is drawn (an SVG point each).
        expected = photos + len(data.class_names)
        drawn = f"document.querySelectorAll('#latent-plot g.trace path.point').length >= {expected}"
        page.wait_for_function(f"() => {drawn}", timeout=30_000)

        # Results: the test split's U / S / H as metrics.json has them, and the per-class table.
        _tab(page, "Results")
        summary = page.locator("#results-summary")
        expect(summary).to_contain_text(f"U {metrics['U']:.2f}", timeout=30_000)
        expect(summary).to_contain_text(f"S {metrics['S']:.2f}")
        table = page.locator("#results-table")
        expect(table).to_contain_text("mistaken for")
        assert set(_kind_column(page)) == {"seen", "unseen"}
        page.locator("#results-show label", has_text="unseen").click()
        page.wait_for_function(f"({KIND_COLUMN_JS})().every(kind => kind === 'unseen')", timeout=30_000)
        page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
        browser.close()
