"""The app's helpers and the service features its pages show, without a browser: refusals, example captions,
export files, temporary-file cleaning, near-duplicate warnings, the header line and the alignment figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_app_api import EXAMPLES_DIR, require_demo_bundle


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    from acmr_core.serving.service import StudioService

    opened = StudioService.open(
        require_demo_bundle(), device="cpu", user_classes_dir=tmp_path_factory.mktemp("uc"), warm=False
    )
    yield opened
    opened.store.close()


def test_examples_are_captioned_with_class_and_kind() -> None:
    from app.examples import captioned_examples

    index = json.loads((EXAMPLES_DIR / "index.json").read_text(encoding="utf-8"))
    items = captioned_examples(EXAMPLES_DIR)
    assert len(items) == len({entry["class"] for entry in index})  # one per class
    first = index[0]
    assert items[0] == (str(EXAMPLES_DIR / first["file"]), f"{first['class']} ({first['kind']})")
    assert {caption.rsplit("(", 1)[1] for _, caption in items} == {"seen)", "unseen)"}


def test_examples_without_an_index_fall_back_to_file_names(tmp_path: Path) -> None:
    from PIL import Image

    from app.examples import captioned_examples

    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    assert captioned_examples(tmp_path) == [(str(tmp_path / "cat.png"), "cat")]


def test_an_upload_payload_gives_its_path() -> None:
    from app.widgets import uploaded_path

    assert uploaded_path({"path": "/tmp/x.png", "url": "http://h/x.png"}) == "/tmp/x.png"
    assert uploaded_path("/tmp/y.png") == "/tmp/y.png"
    assert uploaded_path(None) is None
    assert uploaded_path({"path": None}) is None


def test_a_refusal_is_one_escaped_line() -> None:
    from acmr_core.errors import ImageError
    from app.predict_panel import refusal_markdown

    text = refusal_markdown(ImageError("<b>x.png</b>: not an image"))
    assert "&lt;b&gt;x.png&lt;/b&gt;: not an image" in text
    assert "<b>" not in text and "\n" not in text


def test_each_export_is_a_file_of_its_own_in_the_scratch_folder() -> None:
    from app.define_panel import write_export
    from app.paths import scratch_folder

    # Two visitors exporting at once: a shared file could hand one's classes to the other (issue 24).
    first = write_export("demo-world", '{"a": 1}')
    second = write_export("demo-world", '{"a": 2}')
    assert first != second and first.name == second.name == "demo-world-user-classes.json"
    assert first.is_relative_to(scratch_folder()) and second.is_relative_to(scratch_folder())
    assert json.loads(first.read_text(encoding="utf-8")) == {"a": 1}
    assert json.loads(second.read_text(encoding="utf-8")) == {"a": 2}
    assert [path.name for path in first.parent.iterdir()] == [first.name]  # no temporary left behind


def test_near_duplicates_differ_in_at_most_one_attribute_group(service) -> None:
    names = service.attribute_names
    base = service.class_names()[0]
    values = service.class_values(base)
    on = next(name for name in names if values[name] >= 0.5)
    flipped = {**values, on: 0.6}  # one attribute changed by more than the threshold, still drawable
    service.define_class("near twin", flipped)
    # Another value in every group (the demo world draws one value per group).
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split(": ")[0], []).append(name)
    far = {}
    for members in groups.values():
        far[next(name for name in members if values[name] < 0.5)] = 1.0
    service.define_class("far away", far)
    # Another shape: two one-hot entries turn, but it is one group (issue 32).
    shapes = groups["shape"]
    shape_on = next(name for name in shapes if values[name] >= 0.5)
    other_shape = next(name for name in shapes if name != shape_on)
    service.define_class("shape swap", {**values, shape_on: 0.0, other_shape: 1.0})
    try:
        assert base in service.near_duplicates("shape swap")
        assert base in service.near_duplicates("near twin")
        assert "near twin" in service.near_duplicates(base)
        assert "far away" not in service.near_duplicates(base)
        assert "near twin" not in service.near_duplicates("near twin")  # never itself
    finally:
        service.delete_class("near twin")
        service.delete_class("far away")
        service.delete_class("shape swap")


def test_header_line_and_alignment_figure_follow_the_classes(service) -> None:
    from app.latent_panel import alignment_markdown
    from app.tables import alignment_frame, summary_markdown

    before = summary_markdown(service)
    assert "added here" not in before and "sha256" not in before and "γ" not in before
    service.define_class("mine", {service.attribute_names[0]: 1.0})
    try:
        assert "plus **1** added here" in summary_markdown(service)
        frame = alignment_frame(service)
        assert frame.iloc[-1]["class"] == "mine"  # user classes are in the table
        assert frame.iloc[-1]["own images nearest"] == "(no images)"
        summary = service.alignment_summary()
        assert summary.classes_with_images == len(service.class_names()) - 1
        expected = int((frame["own images nearest"] == "yes").sum())
        assert summary.own_nearest == expected
        assert f"Alignment: {summary.fraction:.0%}" in alignment_markdown(service)
    finally:
        service.delete_class("mine")


def test_a_full_store_refuses_before_refitting(service, monkeypatch: pytest.MonkeyPatch) -> None:
    import acmr_core.serving.user_classes as user_classes
    from acmr_core.errors import UserClassError

    monkeypatch.setattr(user_classes, "MAX_USER_CLASSES", 0)
    refits: list[int] = []
    builder = service.classes.builder
    monkeypatch.setattr(builder, "_fit_classifier", lambda attributes: refits.append(len(attributes)))
    with pytest.raises(UserClassError, match="holds at most 0"):
        service.define_class("one too many", {service.attribute_names[0]: 1.0})
    assert refits == []  # refused before the (slow) re-fit
    assert "one too many" not in service.class_names()


def test_your_classes_lists_every_attribute_group_and_the_try_row_returns_after_a_reload(service) -> None:
    from app.define_panel import try_newest
    from app.tables import user_class_frame

    hide = try_newest(lambda *_: service, {})
    assert hide("demo-world", None)[0]["visible"] is False  # no class yet: no "try it" row
    values = {"colour: red": 1.0, "pattern: dotted": 1.0, "shape: circle": 0.6, "size: large": 1.0}
    stored = service.define_class("six groups", values)
    try:
        [described] = user_class_frame(service)["attributes (strongest per group)"]
        groups = [part.split(":")[0] for part in described.split(", ")]
        # All six groups, in the model's order; the completed ones too; a partial value shows its strength.
        assert groups == ["colour", "pattern", "shape", "size", "count", "background"]
        assert "shape: circle 0.6" in described and set(stored["assumed"]) <= set(groups)
        row, note, _ = try_newest(lambda *_: service, {})("demo-world", None)
        assert row["visible"] is True and "six groups" in note
    finally:
        service.delete_class("six groups")
