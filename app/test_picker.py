"""*Pick a test image*: what the Predict tab offers for a model that reads precomputed features, not images
(a bundle from ``acmr bundle --run``). One line says so; a class and one of its test images are picked, and
the answer appears in the same view as an upload's (:func:`app.predict_panel.answer_view`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from acmr_core.bundle.bundle import FEATURES_ONLY_NOTICE
from acmr_core.serving.results import Prediction
from acmr_core.serving.service import StudioService
from app.widgets import PREDICT_CONCURRENCY, ServiceFor, Session, user_errors

PICKER_NOTICE = (
    f"**This model {FEATURES_ONLY_NOTICE}**: it cannot read an upload. Pick one of its test images instead."
)

#: ``(service, prediction) -> the answer view's outputs`` (app.predict_panel.answer_view).
AnswerView = Callable[[StudioService, Prediction], tuple]


@dataclass
class TestPicker:
    """The picker's components (shown only for a features-only model)."""

    row: gr.Column
    class_choice: gr.Dropdown
    image_choice: gr.Dropdown


def test_picker(default: StudioService) -> TestPicker:
    """Lay out the picker (inside the Predict tab); hidden unless the model is features-only."""
    with gr.Column(visible=default.features_only, elem_id="test-picker") as row:
        gr.Markdown(PICKER_NOTICE, elem_id="features-only-notice")
        with gr.Row():
            class_choice = gr.Dropdown(
                _class_choices(default), value=None, label="Pick a test image: its class",
                elem_id="pick-class", min_width=200,
            )  # fmt: skip
            image_choice = gr.Dropdown(
                [], value=None, label="…and one of its test images (✓ answered right, ✗ what it answered)",
                elem_id="pick-image", min_width=200,
            )  # fmt: skip
    return TestPicker(row, class_choice, image_choice)


def _class_choices(service: StudioService) -> list[str]:
    return list(service.bundle.catalog.names) if service.features_only else []


def wire_picker(
    picker: TestPicker,
    answer_outputs: list[Any],
    gamma: gr.Slider,
    top_k: gr.Slider,
    session: Session,
    service_for: ServiceFor,
    answer: AnswerView,
) -> None:
    """A class lists its test images; an image shows its answer in ``answer_outputs`` (the upload's view)."""

    @user_errors
    def on_class(name: str | None, bundle_name: str, visitor: str | None) -> Any:
        if not name:
            return gr.update(choices=[], value=None)
        images = service_for(bundle_name, visitor).test_images(name)
        return gr.update(choices=[(item.label, item.position) for item in images], value=None)

    @user_errors
    def on_image(
        position: int | None, gamma_value: float, k: float, bundle_name: str, visitor: str | None
    ) -> tuple:
        if position is None:
            return tuple(gr.skip() for _ in answer_outputs)
        service = service_for(bundle_name, visitor)
        prediction = service.predict_test_image(int(position), gamma=float(gamma_value), top_k=int(k))
        return answer(service, prediction)

    picker.class_choice.input(
        on_class, [picker.class_choice, *session.who], picker.image_choice, api_visibility="private"
    )
    # A new image, γ or top-k: the picked image's answer again (as an upload's follows them).
    gr.on(
        [picker.image_choice.input, gamma.release, top_k.release],
        on_image,
        [picker.image_choice, gamma, top_k, *session.who],
        answer_outputs,
        concurrency_limit=PREDICT_CONCURRENCY,
        concurrency_id="predict",
        api_visibility="private",
        trigger_mode="always_last",
    )


def picker_for(service: StudioService) -> tuple:
    """The picker as another model shows it (after the model switch): ``(row, class_choice,
    image_choice)``."""
    return (
        gr.update(visible=service.features_only),
        gr.update(choices=_class_choices(service), value=None),
        gr.update(choices=[], value=None),
    )
