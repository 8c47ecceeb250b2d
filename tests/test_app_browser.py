"""End to end in a real browser: `python -m app` driven by Playwright with Debian's chromium.

Uploads an example image, sees a prediction, adds a class with the attribute editor, checks that an HTML class
name is shown as text (never run), and saves docs/screenshot.png (shown in the README). Also: a listed bundle
that cannot be opened shows an error and leaves the bundle choice on the one still in use.
Skips where chromium is absent, except under CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_app_api import HTML_NAME, REPO_ROOT, example_images, free_port, require_demo_bundle

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = REPO_ROOT / "docs" / "screenshot.png"
BROKEN_BUNDLE = "broken-bundle"
START_TIMEOUT_S = 120

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{CHROMIUM} is missing on CI; install it with: sh .ci/install-browser.sh")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")


def _wait_until_served(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"python -m app exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"python -m app did not answer on {url} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m app` in a subprocess on a free loopback port, user classes in a temporary folder."""
    _require_chromium()
    bundle = require_demo_bundle()
    port = free_port()
    log_path = tmp_path_factory.mktemp("app") / "app.log"
    # The listed bundles: the demo (given as --bundle) and one whose weights are missing.
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    (checkpoints / BROKEN_BUNDLE).mkdir()
    shutil.copy(bundle / "manifest.json", checkpoints / BROKEN_BUNDLE / "manifest.json")
    command = [
        sys.executable, "-m", "app", "--bundle", str(bundle), "--port", str(port),
        "--checkpoints", str(checkpoints), "--user-classes", str(tmp_path_factory.mktemp("user_classes")),
    ]  # fmt: skip
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        try:
            _wait_until_served(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a (searchable) Gradio dropdown."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(option)
    box.press("Enter")
    box.press("Escape")  # close the option list


def _add_class(page, name: str, attributes: list[str]) -> None:
    page.locator("#class-name textarea, #class-name input").first.fill(name)
    for attribute in attributes:
        _choose(page, "attribute-toggles", attribute)
    page.get_by_role("button", name="Add class").click()


def test_upload_predict_define_and_screenshot(app_url: str) -> None:
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect, sync_playwright

    client = Client(app_url, verbose=False)
    attributes = client.predict(api_name="/catalog")["attributes"]
    unseen_examples = [path for path in example_images() if path.name.startswith("unseen")]

    def recognised(path: Path) -> bool:  # file names are <kind>__<class slug>__<i>.png
        label = client.predict(handle_file(str(path)), api_name="/predict")["label"]
        return label == path.name.split("__")[1].replace("-", " ")

    # Zero-shot at work for the README screenshot: the first unseen example the model recognises.
    image = next(
        (path for path in unseen_examples if recognised(path)), (unseen_examples or example_images())[0]
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(app_url)
        expect(page.get_by_text("ACMR zero-shot studio").first).to_be_visible(timeout=60_000)

        # Predict: upload an example image and wait for the ranked classes and what the model reads.
        page.locator("#query-image input[type=file]").set_input_files(str(image))
        ranked = page.locator("#top-classes")
        expect(ranked).to_contain_text("·", timeout=60_000)
        assert any(kind in ranked.inner_text() for kind in ("seen", "unseen"))
        expect(page.locator("#sees-summary")).to_contain_text("Agreement")

        # An HTML-looking class name is shown as text everywhere and never run; then delete it again.
        page.get_by_role("tab", name="Define a class").click()
        _add_class(page, HTML_NAME, attributes[:1])
        status = page.locator("#define-status")
        expect(status).to_contain_text("Added", timeout=30_000)
        expect(status).to_contain_text(HTML_NAME)
        expect(page.locator("#your-classes")).to_contain_text(HTML_NAME)
        _choose(page, "chosen-class", HTML_NAME)
        page.get_by_role("button", name="Delete").click()
        expect(status).to_contain_text("Deleted", timeout=30_000)
        expect(page.locator("#your-classes")).not_to_contain_text(HTML_NAME)

        # A class described with three attributes: it joins the predictions and the plots at once.
        page.get_by_role("button", name="Clear", exact=True).first.click()
        expect(status).not_to_contain_text("Deleted", timeout=30_000)  # the form is cleared
        _add_class(page, "my new class", attributes[:1] + attributes[-2:])
        expect(status).to_contain_text("Added my new class", timeout=30_000)
        assert page.evaluate("window.__acmr_xss === undefined"), "an HTML class name was executed"
        assert not dialogs

        # Back to the prediction, with the new class in the plot, for the screenshot the README shows.
        page.get_by_role("tab", name="Predict").click()
        expect(ranked).to_contain_text("·")
        page.wait_for_timeout(1500)  # let the plot finish drawing
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_broken_bundle_is_refused_and_the_choice_stays(app_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url)
        choice = page.locator("#bundle-choice input").first
        expect(choice).to_have_value(require_demo_bundle().name, timeout=60_000)
        _choose(page, "bundle-choice", BROKEN_BUNDLE)
        expect(page.get_by_text("is missing backbone.json").first).to_be_visible(timeout=30_000)
        page.get_by_text(
            "ACMR zero-shot studio"
        ).first.click()  # the dropdown shows updates once it loses focus
        expect(choice).to_have_value(require_demo_bundle().name, timeout=30_000)
        browser.close()
