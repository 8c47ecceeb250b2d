"""Describing a class in the app (issue 15): the two HTTP endpoints and the browser flow.

``/attributes_from_text`` and ``/attributes_from_images`` through gradio_client against the module server of
tests/test_app_api.py, and in a real browser (the app of tests/test_app_browser.py): describe a class in
words, edit the attribute list, add it, and see it predicted; read example images with a bad one among them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_app_api import (  # noqa: F401 (server and client are fixtures)
    app_error,
    bad_image_files,
    catalog,
    client,
    example_images,
    predict,
    server,
)
from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS, _choose, app_url  # noqa: F401 (app_url: fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]


def from_text(client, text: str) -> dict[str, float]:  # noqa: F811
    return client.predict(text, api_name="/attributes_from_text")


def from_images(client, paths: list[Path]) -> dict[str, float]:  # noqa: F811
    from gradio_client import handle_file

    return client.predict([handle_file(str(path)) for path in paths], api_name="/attributes_from_images")


def test_describe_endpoints_are_listed(client) -> None:  # noqa: F811
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in endpoints["/attributes_from_text"]["parameters"]] == ["text"]
    assert [p["parameter_name"] for p in endpoints["/attributes_from_images"]["parameters"]] == ["images"]


def test_text_gives_only_the_mentioned_attributes(client) -> None:  # noqa: F811
    result = from_text(client, "Three big violet balls, on a black background!")
    assert result == {
        "count: three": 1.0,
        "size: large": 1.0,
        "colour: purple": 1.0,
        "shape: circle": 1.0,
        "background: dark": 1.0,
    }
    assert set(result) <= set(catalog(client)["attributes"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "nothing recognised"),
        ("good morning, how are you?", "nothing recognised"),
        ("y" * 10_000, "at most"),
    ],
)
def test_bad_text_gets_a_message_and_nothing_is_added(client, text: str, message: str) -> None:  # noqa: F811
    before = catalog(client)["classes"]
    assert message in app_error(lambda: from_text(client, text))
    assert catalog(client)["classes"] == before


def test_images_give_the_average_reading_of_every_attribute(client) -> None:  # noqa: F811
    first, second = example_images()[0], example_images()[-1]
    one, other = from_images(client, [first]), from_images(client, [second])
    both = from_images(client, [first, second])
    assert set(both) == set(catalog(client)["attributes"])
    assert all(0.0 <= value <= 1.0 for value in both.values())
    assert one != other  # two different classes read differently
    for name, value in both.items():
        assert value == pytest.approx((one[name] + other[name]) / 2, abs=2e-4)


def test_bad_images_are_skipped_without_losing_the_good_ones(client, tmp_path: Path) -> None:  # noqa: F811
    bad = bad_image_files(tmp_path)
    good = example_images()[0]
    assert from_images(client, [bad["not-an-image"], good, bad["empty"]]) == from_images(client, [good])
    assert "not an image" in app_error(lambda: from_images(client, [bad["not-an-image"]]))
    assert "at most 10" in app_error(lambda: from_images(client, [good] * 11))


def test_described_class_is_added_with_define_class_and_predicted(client) -> None:  # noqa: F811
    image = example_images()[0]
    label = predict(client, image)["label"]
    attributes = from_text(client, label)  # the demo's class names are descriptions themselves
    truth = next(entry["attributes"] for entry in catalog(client)["classes"] if entry["name"] == label)
    assert all(truth[name] == value for name, value in attributes.items())  # what it set is right
    attributes.update({name: value for name, value in truth.items() if value})  # the user's edit
    client.predict("described twin", json.dumps(attributes), api_name="/define_class")
    try:
        ranking = [item["label"] for item in predict(client, image)["confidences"]]
        assert "described twin" in ranking[:5]
    finally:
        client.predict("described twin", api_name="/delete_class")


# ---- in a browser ----------------------------------------------------------------------------------------


def test_browser_describe_edit_add_then_predicted(app_url: str, tmp_path: Path) -> None:  # noqa: F811
    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    api = Client(app_url, verbose=False)
    image = example_images()[0]
    label = predict(api, image)["label"]
    truth = next(entry["attributes"] for entry in catalog(api)["classes"] if entry["name"] == label)
    described = from_text(api, label)
    missing = [name for name, value in truth.items() if value >= 0.5 and name not in described]
    bad = bad_image_files(tmp_path)["not-an-image"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(app_url)
        # The page's own load events (class lists, two latent plots) go first on a busy CI machine.
        expect(page.get_by_text("ACMR zero-shot studio").first).to_be_visible(timeout=60_000)
        page.get_by_role("tab", name="Define a class").click()
        status = page.locator("#describe-status")

        # Nothing recognised: a message, and the list of attributes that apply stays empty.
        page.locator("#describe-text textarea").fill("good morning")
        page.get_by_role("button", name="Fill from words").click()
        expect(status).to_contain_text("nothing recognised", timeout=90_000)

        # Describe in words: the list of attributes that apply is filled with what the text says.
        page.locator("#describe-text textarea").fill(label)
        page.get_by_role("button", name="Fill from words").click()
        expect(status).to_contain_text("Recognised", timeout=30_000)
        toggles = page.locator("#attribute-toggles")
        for name in described:
            expect(toggles).to_contain_text(name)

        # Edit: tick what the description left out, then add with the existing button.
        for name in missing:
            _choose(page, "attribute-toggles", name)
        page.locator("#class-name textarea, #class-name input").first.fill("described in words")
        page.get_by_role("button", name="Add class").click()
        expect(page.locator("#define-status")).to_contain_text("Added described in words", timeout=30_000)

        # From example images: the bad one is refused by name, the good one read and shown per image.
        page.locator("#describe-images input[type=file]").set_input_files([str(bad), str(image)])
        page.get_by_role("button", name="Fill from images").click()
        expect(status).to_contain_text("Read 1 image", timeout=60_000)
        expect(status).to_contain_text(f"refused {bad.name}")
        expect(page.locator("#image-readings")).to_contain_text(image.name)

        # The class described in words takes part in predictions.
        page.get_by_role("tab", name="Predict").click()
        page.locator("#query-image input[type=file]").set_input_files(str(image))
        expect(page.locator("#top-classes")).to_contain_text("described in words", timeout=60_000)
        # The class is this browser's own (issue 24): the API client cannot see or delete it; the page can.
        assert "described in words" not in [entry["name"] for entry in catalog(api)["classes"]]
        page.get_by_role("tab", name="Define a class").click()
        _choose(page, "chosen-class", "described in words")
        page.get_by_role("button", name="Delete").click()
        expect(page.locator("#define-status")).to_contain_text("Deleted described in words", timeout=30_000)
        browser.close()
