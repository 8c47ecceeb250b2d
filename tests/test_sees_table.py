"""The Predict tab's "what the model sees" table: one row per attribute group, the image's reading beside
the predicted class's, agreement marked (the pure readings, then the table and the app's own panel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmr_core.serving.readings import (
    GroupReading,
    agreeing_groups,
    all_agree,
    group_readings,
    prediction_readings,
)
from acmr_core.serving.results import Prediction, RankedClass
from app.tables import SEES_COLUMNS, sees_frame

# The reported case: predicted "large blue dotted square", yet the image reads triangle most strongly.
DECODED = {
    "colour: red": 0.1, "colour: blue": 0.8,
    "shape: square": 0.37, "shape: triangle": 0.79,
    "count: one": 0.2, "count: three": 0.77,
    "size: small": 0.3, "size: large": 0.6,
}  # fmt: skip
SQUARE = {
    "colour: red": 0.0, "colour: blue": 1.0,
    "shape: square": 1.0, "shape: triangle": 0.0,
    "count: one": 1.0, "count: three": 0.0,
    "size: small": 0.0, "size: large": 1.0,
}  # fmt: skip


def _prediction(decoded: dict[str, float], predicted: dict[str, float]) -> Prediction:
    return Prediction(
        ranked=[RankedClass("large blue dotted square", "unseen", 0.6)],
        decoded=decoded,
        predicted_attributes=predicted,
        agreement=0.8,
        xy=(0.0, 0.0),
        gamma=0.0,
        familiarity=0.9,
        unfamiliar=False,
    )


# ---- the readings (pure) -----------------------------------------------------------------------------------


def test_grouped_names_give_one_row_per_group_in_attribute_order_with_disagreements_kept() -> None:
    readings = group_readings(DECODED, SQUARE)
    assert [reading.group for reading in readings] == ["colour", "shape", "count", "size"]
    assert readings[0] == GroupReading("colour", "blue", 0.8, "blue", 1.0, True)
    assert readings[1] == GroupReading("shape", "triangle", 0.79, "square", 1.0, False)
    assert readings[2] == GroupReading("count", "three", 0.77, "one", 1.0, False)
    assert readings[3].agree
    assert agreeing_groups(readings) == 2
    assert not all_agree(readings)


def test_every_group_agrees_when_the_strongest_readings_are_the_class_values() -> None:
    decoded = {**DECODED, "shape: square": 0.9, "count: one": 0.95}
    readings = group_readings(decoded, SQUARE)
    assert agreeing_groups(readings) == len(readings) == 4
    assert all_agree(readings)


def test_cub_style_names_are_grouped_too() -> None:
    decoded = {"has_bill::hooked": 0.2, "has_bill::cone": 0.7, "has_wing::blue": 0.6, "has_wing::red": 0.1}
    bird = {"has_bill::hooked": 0.9, "has_bill::cone": 0.1, "has_wing::blue": 0.8, "has_wing::red": 0.0}
    readings = group_readings(decoded, bird)
    assert [(r.group, r.read, r.has, r.agree) for r in readings] == [
        ("has_bill", "cone", "hooked", False),
        ("has_wing", "blue", "blue", True),
    ]


def test_a_class_that_sets_nothing_in_a_group_does_not_agree() -> None:
    readings = group_readings(DECODED, {**SQUARE, "size: small": 0.0, "size: large": 0.0})
    size = readings[3]
    assert (size.group, size.has, size.has_score, size.agree) == ("size", "", 0.0, False)


def test_ungrouped_names_list_the_strongest_readings_marked_by_whether_the_class_has_them() -> None:
    decoded = {"stripes": 0.9, "black": 0.2, "water": 0.7, "hooves": 0.8}
    zebra = {"stripes": 1.0, "black": 1.0, "water": 0.1, "hooves": 0.5}
    readings = group_readings(decoded, zebra, count=3)
    assert [(r.read, r.agree) for r in readings] == [("stripes", True), ("hooves", True), ("water", False)]
    assert {r.group for r in readings} == {""}
    assert agreeing_groups(readings) == 2


def test_a_prediction_is_read_against_its_predicted_class() -> None:
    readings = prediction_readings(_prediction(DECODED, SQUARE))
    assert readings == group_readings(DECODED, SQUARE)


# ---- the table ---------------------------------------------------------------------------------------------


def test_the_table_says_per_group_what_the_image_reads_and_what_the_class_has() -> None:
    frame = sees_frame(_prediction(DECODED, SQUARE))
    assert (
        list(frame.columns)
        == SEES_COLUMNS
        == ["group", "the image reads", "the predicted class has", "agree"]
    )
    shape = frame[frame["group"] == "shape"].iloc[0].tolist()
    assert shape == ["shape", "triangle 0.79", "square 1.00", "✗"]
    assert frame[frame["group"] == "colour"].iloc[0]["agree"] == "✓"
    assert len(frame) == 4


def test_the_summary_counts_the_agreeing_groups_and_explains_the_table() -> None:
    from app.predict_panel import sees_markdown

    text = sees_markdown(_prediction(DECODED, SQUARE))
    assert "**Prediction:** large blue dotted square" in text
    assert "2 of 4** attribute groups agree" in text
    assert "Each row is one attribute group" in text and "✗" in text


# ---- the app's Predict panel (the shipped demo bundle) -----------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    from acmr_core.serving.registry import ServiceRegistry
    from app.ui import build_app
    from tests.test_app_api import EXAMPLES_DIR, require_demo_bundle

    bundle = require_demo_bundle()
    registry = ServiceRegistry(
        checkpoints=bundle.parent,
        default_bundle=bundle.name,
        device="cpu",
        user_classes_dir=tmp_path_factory.mktemp("uc"),
        warm_default=False,
    )
    demo = build_app(registry, examples_dir=EXAMPLES_DIR)
    yield demo, registry.default()
    registry.default().store.close()


def test_the_predict_panel_table_has_the_group_columns_and_answers_with_them(app, one_torch_thread) -> None:
    import gradio as gr

    from app.predict_panel import SEES_LABEL
    from tests.test_app_api import example_images

    demo, service = app
    tables = [
        block
        for block in demo.blocks.values()
        if isinstance(block, gr.Dataframe) and block.label == SEES_LABEL
    ]
    assert len(tables) == 1 and tables[0].headers == SEES_COLUMNS
    # The Predict event itself (the one writing the table), called as the page would on an upload.
    event = next(fn for fn in demo.fns.values() if any(out is tables[0] for out in fn.outputs))
    image = example_images()[0]
    outputs = event.fn(str(Path(image)), service.default_gamma, 5, service.bundle_name, None)
    summary, table = outputs[1], outputs[2]
    frame = table["value"]  # an update: the label says when the readings mean little (issue 34)
    assert table["label"] == SEES_LABEL  # a render of the world: the plain label
    assert list(frame.columns) == SEES_COLUMNS
    groups = {name.split(": ", 1)[0] for name in service.attribute_names}
    assert set(frame["group"]) == groups and len(frame) == len(groups)
    assert set(frame["agree"]) <= {"✓", "✗"}
    agreeing = int((frame["agree"] == "✓").sum())
    assert f"{agreeing} of {len(groups)}** attribute groups agree" in summary
