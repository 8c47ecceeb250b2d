"""End to end in a real browser: `python -m app` driven by Playwright with Debian's chromium.

Uploads an example image, sees a prediction, adds a class with the attribute editor, checks that an HTML class
name is shown as text (never run), and takes a screenshot: into a temporary folder, or where
ACMR_SCREENSHOT says (`make screenshot` points it at docs/screenshot.png, the README's picture), so a test run
never changes the checkout. Also: a listed bundle that cannot be opened shows an error and leaves the bundle
choice on the one still in use.
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

from tests.test_app_api import (
    HTML_NAME,
    PORT_ATTEMPTS,
    REPO_ROOT,
    example_images,
    free_port,
    require_demo_bundle,
)

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
BROKEN_BUNDLE = "broken-bundle"
START_TIMEOUT_S = 120

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{CHROMIUM} is missing on CI; install it with: sh .ci/install-browser.sh")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")


def _wait_until_served(url: str, process: subprocess.Popen) -> bool:
    """True once ``url`` answers; False if the app exited first (e.g. its port was taken)."""
    deadline = time.monotonic() + START_TIMEOUT_S  # a hang guard for start-up, not a speed check
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"python -m app did not answer on {url} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m app` in a subprocess on a free loopback port, user classes in a temporary folder.

    Gradio cannot serve on port 0 (see tests.test_app_api.free_port): should the port be taken between the
    pick and the app binding it, the app exits and is started again on a new port.
    """
    _require_chromium()
    bundle = require_demo_bundle()
    log_dir = tmp_path_factory.mktemp("app")
    # The listed bundles: the demo (given as --bundle) and one whose weights are missing.
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    (checkpoints / BROKEN_BUNDLE).mkdir()
    shutil.copy(bundle / "manifest.json", checkpoints / BROKEN_BUNDLE / "manifest.json")
    user_classes = tmp_path_factory.mktemp("user_classes")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        command = [
            sys.executable, "-m", "app", "--bundle", str(bundle), "--port", str(port),
            "--checkpoints", str(checkpoints), "--user-classes", str(user_classes),
        ]  # fmt: skip
        log_path = log_dir / f"app-{attempt}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        try:
            if _wait_until_served(url, process):
                yield url
                return
            if "empty port" not in log_path.read_text():
                raise AssertionError(f"python -m app exited early with code {process.returncode}")
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    raise AssertionError(f"python -m app found no free port in {PORT_ATTEMPTS} attempts")


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


@pytest.fixture
def screenshot_path(tmp_path: Path) -> Path:
    """Where the screenshot goes: a temporary file unless ACMR_SCREENSHOT names one (``make screenshot``)."""
    return Path(os.environ.get("ACMR_SCREENSHOT") or tmp_path / "screenshot.png")


def test_upload_predict_define_and_screenshot(app_url: str, screenshot_path: Path) -> None:
    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    attributes = Client(app_url, verbose=False).predict(api_name="/catalog")["attributes"]
    unseen_examples = [path for path in example_images() if path.name.startswith("unseen")]
    image = (unseen_examples or example_images())[0]  # zero-shot at work: a class never seen in training
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
        screenshot_path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot_path), full_page=True)
        browser.close()
    assert screenshot_path.stat().st_size > 10_000


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


def _choose_labelled(page, label: str, option: str) -> None:
    """Pick ``option`` in the (searchable) Gradio dropdown labelled ``label``."""
    box = page.get_by_label(label, exact=True).first
    box.click()
    box.fill(option)
    box.press("Enter")
    box.press("Escape")


def test_copy_rename_export_and_import_handlers(app_url: str, tmp_path: Path) -> None:
    import json

    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    catalog = Client(app_url, verbose=False).predict(api_name="/catalog")
    source = catalog["classes"][0]
    applies = [name for name, value in source["attributes"].items() if value >= 0.5]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500}, accept_downloads=True)
        page.goto(app_url)
        expect(page.get_by_text("ACMR zero-shot studio").first).to_be_visible(timeout=60_000)
        page.get_by_role("tab", name="Define a class").click()
        status = page.locator("#define-status")

        # Copy: a model class's attributes fill the "applies" list.
        _choose_labelled(page, "Start from class", source["name"])
        page.get_by_role("button", name="Copy its attributes").click()
        toggles = page.locator("#attribute-toggles")
        for attribute in applies:
            expect(toggles).to_contain_text(attribute, timeout=30_000)

        # Rename a class of ours.
        page.locator("#class-name textarea, #class-name input").first.fill("to rename")
        page.get_by_role("button", name="Add class").click()
        expect(status).to_contain_text("Added to rename", timeout=30_000)
        _choose(page, "chosen-class", "to rename")
        page.get_by_label("New name", exact=True).fill("renamed")
        page.get_by_role("button", name="Rename").click()
        expect(status).to_contain_text("Renamed to renamed", timeout=30_000)
        expect(page.locator("#your-classes")).to_contain_text("renamed")

        # Export: the downloaded file lists the renamed class with the copied attributes.
        page.get_by_role("button", name="Export JSON").click()
        link = page.locator("a[href$='-user-classes.json']").first
        expect(link).to_be_visible(timeout=30_000)
        with page.expect_download() as download:
            link.click()
        exported = json.loads(Path(download.value.path()).read_text())
        [entry] = [item for item in exported["classes"] if item["name"] == "renamed"]
        assert sorted(name for name, value in entry["attributes"].items() if value >= 0.5) == sorted(applies)

        # Import the same classes under new names: they join the list.
        for item in exported["classes"]:
            item["name"] = f"imported {item['name']}"
        upload = tmp_path / "classes.json"
        upload.write_text(json.dumps(exported))
        with page.expect_file_chooser() as chooser:
            page.get_by_role("button", name="Import JSON").click()
        chooser.value.set_files(str(upload))
        expect(status).to_contain_text(f"Imported {len(exported['classes'])} class(es)", timeout=30_000)
        expect(page.locator("#your-classes")).to_contain_text("imported renamed")
        browser.close()
