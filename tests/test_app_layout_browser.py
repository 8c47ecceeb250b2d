"""Issue 35: what a newcomer sees, on a laptop (1366×900) and a phone (390×844), in a real browser.

Every tab reachable without an overflow menu and no page wider than the screen; tables that fit (no header
broken inside a word, no column cut); on the latent map, each class's photos visible (at least half of their
markers' area, computed from the rendered SVG), a photo's hover naming its class, the legend inside the
figure and the labels of ten user classes apart; the draft's map in view while its attributes are edited.

The app runs with ``--shared-classes`` (one set of classes for everyone), so the page must not call the
classes another visitor added "yours". ``ACMR_SCREENSHOT_DIR`` (``make screenshot``: docs/screenshots)
keeps a screenshot of each tab at each size; otherwise they go to a temporary folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_app_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    _choose,
    _horizontal_overflow,
    _require_chromium,
    _served_app,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

VIEWPORTS = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
TABS = ("Predict", "Define a class", "Latent space")
SCREENSHOT_CLASS = "red dotted ball"
TEN_CLASSES = [
    f"user class {word}"
    for word in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
]


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with one shared set of classes, holding one class added by "another visitor" (the API)."""
    from gradio_client import Client

    _require_chromium()
    folder = tmp_path_factory.mktemp("shared_classes")
    with _served_app(
        tmp_path_factory.mktemp("layout-app"), tmp_path_factory.mktemp("layout-checkpoints"), folder,
        ["--shared-classes"],
    ) as url:  # fmt: skip
        client = Client(url, verbose=False)
        attributes = {"colour: red": 1, "pattern: dotted": 1, "shape: circle": 1, "size: large": 1}
        client.predict(SCREENSHOT_CLASS, json.dumps(attributes), api_name="/define_class")
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("ACMR_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open(playwright, url: str, viewport: dict[str, int]):
    from playwright.sync_api import expect

    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_context(viewport=viewport).new_page()
    page.goto(url)
    expect(page.get_by_text("ACMR zero-shot studio").first).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1000)  # Gradio lays the tab bar out after the page renders
    return browser, page


def _open_tab(page, name: str) -> None:
    """Click a tab that must be on screen: no "More tabs" menu to go through."""
    tab = page.get_by_role("tab", name=name)
    assert tab.count() == 1 and tab.is_visible(), f"the {name} tab is not on screen"
    tab.click()
    page.wait_for_timeout(800)


#: For every visible table: is it wider than its box (a column cut), and which cells (headers and the first
#: rows) hold a word wider than the cell, so that it breaks inside the word ("gro/up") or spills?
TABLES_FIT_JS = """() => {
    const probe = document.createElement('span');
    Object.assign(probe.style, {position: 'absolute', visibility: 'hidden', whiteSpace: 'nowrap'});
    document.body.appendChild(probe);
    const widest = (element) => {
        probe.style.font = getComputedStyle(element).font;
        return Math.max(0, ...element.innerText.split(/\\s+/).filter(Boolean).map((word) => {
            probe.textContent = word;
            return probe.getBoundingClientRect().width;
        }));
    };
    const result = [...document.querySelectorAll('table')]
        .filter((table) => table.offsetParent !== null && table.getBoundingClientRect().width > 0)
        .map((table) => {
            const box = table.closest('.table-wrap') || table.parentElement;
            const cut = table.getBoundingClientRect().right > box.getBoundingClientRect().right + 1;
            // Gradio draws the header as a <table> and the rows as <div>s beside it.
            const rows = table.parentElement.querySelectorAll('.virtual-row:nth-child(-n+10) .body-cell');
            const cells = [...table.querySelectorAll('th'), ...rows]
                .filter((cell) => cell.offsetParent !== null && cell.getBoundingClientRect().height > 0);
            const broken = cells.filter((cell) => {
                // The element that holds the text and wraps it (a header's also holds the sort button).
                const text = cell.querySelector('.header.text, .cell-wrap') || cell;
                const style = getComputedStyle(text);
                const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
                const room = text.clientWidth - padding;
                return widest(text) > room + 1;
            }).map((cell) => cell.innerText.trim());
            return {id: table.closest('[id]')?.id || '', cut, broken};
        });
    probe.remove();
    return result;
}"""


def _tables_fit(page, where: str) -> None:
    for table in page.evaluate(TABLES_FIT_JS):
        assert not table["cut"], f"{where}: the table {table['id']!r} is wider than its box"
        assert not table["broken"], f"{where}: in {table['id']!r}, {table['broken'][:5]} break inside a word"


@pytest.mark.parametrize("size", VIEWPORTS)
def test_every_tab_fits_the_screen_and_is_reachable(shared_app: str, shots: Path, size: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    viewport = VIEWPORTS[size]
    with sync_playwright() as playwright:
        browser, page = _open(playwright, shared_app, viewport)
        assert not page.get_by_role("button", name="More tabs").is_visible()
        # Another visitor added the class: on a shared server it is not "yours".
        expect(page.locator("#bundle-summary")).to_contain_text("plus 1 added here", timeout=30_000)
        expect(page.locator("#bundle-summary")).not_to_contain_text("yours")

        _open_tab(page, "Predict")
        page.locator("#examples .thumbnail-item").nth(1).click()
        expect(page.locator("#top-classes")).to_contain_text("·", timeout=60_000)
        expect(page.locator("#sees-table")).to_contain_text("colour", timeout=30_000)
        # The Predict map names the class the image was given.
        expect(page.locator("#predict-plot .annotation").first).to_be_attached(timeout=30_000)
        given = page.locator("#predict-plot .annotation", has_text="given:")
        expect(given).to_have_count(1)
        page.wait_for_timeout(1500)
        assert _horizontal_overflow(page) <= 0, f"{size}: the Predict tab is wider than the screen"
        _tables_fit(page, f"{size} Predict")
        page.screenshot(path=str(shots / f"{size}-predict.png"), full_page=True)

        _open_tab(page, "Define a class")
        expect(page.locator("#your-classes")).to_contain_text(SCREENSHOT_CLASS, timeout=30_000)
        expect(page.get_by_text("Classes added here").first).to_be_visible()
        expect(page.get_by_text("Your classes", exact=True)).to_have_count(0)
        for group in ("colour", "pattern", "shape", "size", "count", "background"):
            expect(page.locator("#your-classes")).to_contain_text(f"{group}: ")  # every group is listed
        _choose(page, "chosen-class", SCREENSHOT_CLASS)
        page.get_by_role("button", name="Show examples").click()
        expect(page.locator("#examples-status")).to_contain_text("drawn images recognised", timeout=60_000)
        captions = page.locator("#class-examples .caption-label")
        expect(captions).to_have_count(4, timeout=30_000)
        for caption in captions.all():  # shown whole, not cut short
            assert caption.evaluate("c => c.scrollWidth <= c.clientWidth + 1 && !c.innerText.includes('…')")
        # A draft: its label on the map follows its name.
        page.locator("#class-name textarea, #class-name input").first.fill("purple draft")
        for attribute in ("colour: purple", "shape: triangle"):
            _choose(page, "attribute-toggles", attribute)
        expect(page.locator("#draft-preview")).to_contain_text("nearest to", timeout=30_000)
        expect(page.locator("#draft-plot .annotation", has_text="purple draft")).to_have_count(
            1, timeout=30_000
        )
        page.locator("#class-name textarea, #class-name input").first.fill("violet draft")
        expect(page.locator("#draft-plot .annotation", has_text="violet draft")).to_have_count(
            1, timeout=30_000
        )
        page.wait_for_timeout(1000)
        assert _horizontal_overflow(page) <= 0, f"{size}: the Define tab is wider than the screen"
        _tables_fit(page, f"{size} Define")
        page.screenshot(path=str(shots / f"{size}-define.png"), full_page=True)
        # While the editor's values are scrolled to, the draft's map stays in view.
        page.locator("#attribute-editor").scroll_into_view_if_needed()
        page.mouse.wheel(0, 200)
        page.wait_for_timeout(500)
        plot = page.locator("#draft-plot").bounding_box()
        editor = page.locator("#attribute-editor").bounding_box()
        assert plot is not None and editor is not None
        assert plot["y"] >= -1 and plot["y"] + 0.5 * plot["height"] <= viewport["height"], (
            f"{size}: draft map"
        )
        assert editor["y"] < viewport["height"] and editor["y"] + editor["height"] > 0

        _open_tab(page, "Latent space")
        expect(page.locator("#alignment-summary")).to_contain_text("Alignment", timeout=30_000)
        expect(page.locator("#latent-plot .legendtext").first).to_be_attached(timeout=30_000)
        page.wait_for_timeout(1500)
        assert _horizontal_overflow(page) <= 0, f"{size}: the Latent tab is wider than the screen"
        _tables_fit(page, f"{size} Latent")
        page.screenshot(path=str(shots / f"{size}-latent.png"), full_page=True)
        browser.close()


#: Per class, the share of its photo markers' area that no later-drawn marker covers: each photo marker is
#: sampled on a grid; a sample is covered when a marker painted after it (SVG paints in document order) has
#: it inside its outline (isPointInFill, in that marker's own coordinates).
VISIBLE_PHOTOS_JS = """() => {
    const plot = document.querySelector('#latent-plot .js-plotly-plot');
    const traceOf = (element) => {
        const group = element.closest('.trace');
        return group && group.__data__ && group.__data__[0] ? group.__data__[0].trace : null;
    };
    const points = [...plot.querySelectorAll('g.trace path.point')];
    const boxes = points.map((p) => p.getBoundingClientRect());
    const svg = plot.querySelector('svg.main-svg');
    const perClass = {};
    points.forEach((photo, index) => {
        const trace = traceOf(photo);
        if (!trace || !trace.name.endsWith('class images')) return;
        const name = trace.customdata[photo.__data__.i][0];
        const box = boxes[index];
        const later = [];
        for (let j = index + 1; j < points.length; j++) {
            const other = boxes[j];
            const meets = other.right > box.left && other.left < box.right
                && other.bottom > box.top && other.top < box.bottom;
            if (meets) later.push(points[j]);
        }
        // Nodes painted after this one in other layers (higher zorder) follow it in the document too.
        let samples = 0, seen = 0;
        const r = box.width / 2, cx = box.left + r, cy = box.top + box.height / 2;
        for (let a = 0; a < 9; a++) for (let b = 0; b < 9; b++) {
            const x = box.left + (a + 0.5) * box.width / 9, y = box.top + (b + 0.5) * box.height / 9;
            if ((x - cx) ** 2 + (y - cy) ** 2 > r * r) continue;
            samples += 1;
            const covered = later.some((other) => {
                const point = svg.createSVGPoint();
                point.x = x; point.y = y;
                const local = point.matrixTransform(other.getScreenCTM().inverse());
                return other.isPointInFill(local);
            });
            if (!covered) seen += 1;
        }
        const entry = perClass[name] || (perClass[name] = [0, 0]);
        entry[0] += seen; entry[1] += samples;
    });
    return perClass;
}"""

FIRST_PHOTO_JS = """() => {
    const points = [...document.querySelectorAll('#latent-plot g.trace.scatter path.point')];
    const nameOf = (p) => p.closest('.trace').__data__[0].trace.name;
    const index = points.findIndex((p) => nameOf(p).endsWith('class images'));
    const point = points[index];
    return [index, point.closest('.trace').__data__[0].trace.customdata[point.__data__.i][0]];
}"""

LEGEND_INSIDE_JS = """() => {
    const plot = document.querySelector('#latent-plot .js-plotly-plot');
    const figure = plot.querySelector('svg.main-svg').getBoundingClientRect();
    const legend = plot.querySelector('g.legend').getBoundingClientRect();
    return [legend.left >= figure.left - 1, legend.right <= figure.right + 1,
            legend.top >= figure.top - 1, legend.bottom <= figure.bottom + 1];
}"""


@pytest.mark.parametrize("size", VIEWPORTS)
def test_the_map_shows_every_class_photos_and_hover_names_the_class(shared_app: str, size: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser, page = _open(playwright, shared_app, VIEWPORTS[size])
        _open_tab(page, "Latent space")
        expect(page.locator("#latent-plot .legendtext").first).to_be_attached(timeout=30_000)
        page.wait_for_timeout(1500)
        assert all(page.evaluate(LEGEND_INSIDE_JS)), f"{size}: the legend is not inside the figure"
        visible = page.evaluate(VISIBLE_PHOTOS_JS)
        assert len(visible) >= 40  # every class with photos (the demo has 48)
        worst = min(visible, key=lambda name: visible[name][0] / visible[name][1])
        share = visible[worst][0] / visible[worst][1]
        assert share >= 0.5, f"{size}: only {share:.0%} of the photos of {worst!r} are visible"
        # Hovering a photo names its class (never an internal path).
        points = page.locator("#latent-plot g.trace.scatter path.point")
        index, class_name = page.evaluate(FIRST_PHOTO_JS)
        photo = points.nth(index)
        photo.scroll_into_view_if_needed()
        photo.hover(force=True)  # plotly's drag layer lies over the points and answers the hover
        hover = page.locator("#latent-plot .hoverlayer .hovertext")
        expect(hover).to_contain_text(class_name, timeout=10_000)
        assert "demo/" not in (hover.text_content() or "")
        browser.close()


#: The rendered boxes of the map's labels (plotly annotations), by text.
LABEL_BOXES_JS = """() => [...document.querySelectorAll('#latent-plot g.annotation')].map((a) => {
    const box = a.querySelector('.annotation-text-g text, text').getBoundingClientRect();
    return [a.textContent, box.left, box.top, box.right, box.bottom];
})"""


def test_the_labels_of_ten_user_classes_do_not_overlap(shared_app: str) -> None:
    from gradio_client import Client
    from playwright.sync_api import expect, sync_playwright

    client = Client(shared_app, verbose=False)
    colours = ["red", "yellow", "green", "blue", "purple"]
    shapes = ["circle", "square", "triangle"]
    for index, name in enumerate(TEN_CLASSES):  # some alike, so that several crowd one spot of the map
        attributes = {f"colour: {colours[index % 5]}": 1, f"shape: {shapes[index % 3]}": 1}
        client.predict(name, json.dumps(attributes), api_name="/define_class")
    try:
        with sync_playwright() as playwright:
            for size, viewport in VIEWPORTS.items():
                browser, page = _open(playwright, shared_app, viewport)
                _open_tab(page, "Latent space")
                expect(page.locator("#latent-plot g.annotation", has_text=TEN_CLASSES[-1])).to_have_count(
                    1, timeout=30_000
                )
                page.wait_for_timeout(1000)
                boxes = [box for box in page.evaluate(LABEL_BOXES_JS) if box[0] in TEN_CLASSES]
                assert sorted(box[0] for box in boxes) == sorted(TEN_CLASSES)
                for i, (name, *a) in enumerate(boxes):
                    for other, *b in boxes[i + 1 :]:
                        apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
                        assert apart, f"{size}: the labels {name!r} and {other!r} overlap"
                browser.close()
    finally:
        for name in TEN_CLASSES:
            client.predict(name, api_name="/delete_class")
