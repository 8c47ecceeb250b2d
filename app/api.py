"""The documented HTTP endpoints for ``gradio_client`` (see docs/app.md), on the default bundle.

Each API client is a visitor of its own, named by its session (one ``gradio_client.Client``): where the
server keeps classes per visitor, a client sees, changes and predicts with only the classes it defined.

``/predict``, ``/define_class``, ``/delete_class``, ``/latent_space``, ``/catalog``, ``/render_examples``,
``/attributes_from_text``, ``/attributes_from_images``, ``/results`` and ``/predict_test_image`` (the last two
for a model that reads precomputed features), each declared with ``gr.api``: an API-only
endpoint, with no component on the page. Its parameters are the handler's (names and type hints); uploads
arrive as Gradio's raw file payload, already moved into the upload cache and checked (read with
:func:`app.widgets.uploaded_path`), and results go out as returned. The page's own events are private (the
panels, laid out by :mod:`app.ui`). Errors here reach ``gradio_client`` as plain text
(:func:`app.widgets.api_errors`).
"""

# No ``from __future__ import annotations`` here: gr.api documents each endpoint's result from its return
# annotation, read with inspect.signature, which leaves postponed (string) annotations unevaluated.

from typing import Any

import gradio as gr
from gradio.components.plot import PlotData
from gradio.data_classes import FileData

from acmr_core.errors import ACMRError
from acmr_core.serving.results import Prediction
from acmr_core.serving.service import StudioService
from app.widgets import (
    CLASS_EDIT_CONCURRENCY,
    CLASS_EDIT_ID,
    IMAGE_READING_CONCURRENCY,
    IMAGE_READING_ID,
    PREDICT_CONCURRENCY,
    api_errors,
    uploaded_path,
    uploaded_paths,
)


def api_visitor(request: gr.Request | None) -> str | None:
    """The visitor an API call acts for: its client session (``None`` if Gradio gives none)."""
    session = getattr(request, "session_hash", None)
    return f"api-{session}" if session else None


def build_api(service: StudioService) -> None:
    """The documented endpoints for gradio_client (default bundle); call inside the app's Blocks."""
    add_class_api(service)
    add_describe_api(service)
    add_results_api(service)


def add_class_api(service: StudioService) -> None:
    """Predicting, the classes (define, delete, list, render) and the latent-space plot."""

    # FileData: documented as a file (gradio_client's ``handle_file``); the handler gets its dict, as raw.
    @api_errors
    def predict(image: FileData, request: gr.Request) -> dict[str, Any]:
        """Every class's probability, most probable first, and how familiar the image is to the model:
        {label, confidences, familiarity, unfamiliar}."""
        path = uploaded_path(image)
        if not path:
            raise ACMRError("no image given; send an image file")
        visitor = service.for_visitor(api_visitor(request))
        return prediction_record(visitor.predict(path, top_k=len(visitor.class_names())))

    @api_errors
    def render_examples(name: str, request: gr.Request) -> list[dict[str, Any]]:
        """Draw a few images of a class (demo-world bundles) and predict each: one record per image."""
        examples = service.for_visitor(api_visitor(request)).render_examples(name)
        return [example.record() for example in examples]

    @api_errors
    def define_class(name: str, attributes: str, request: gr.Request) -> dict[str, Any]:
        """Add a class from a name and a JSON object {attribute name: value in [0, 1]}."""
        return service.for_visitor(api_visitor(request)).define_class_json(name, attributes)

    @api_errors
    def delete_class(name: str, request: gr.Request) -> dict[str, Any]:
        """Delete one of this client's classes."""
        return service.for_visitor(api_visitor(request)).delete_class(name)

    def latent_space(request: gr.Request) -> PlotData:
        """The latent-space plot (plotly figure)."""
        figure = service.for_visitor(api_visitor(request)).latent_figure()
        return PlotData(type="plotly", plot=figure.to_json())  # what a gr.Plot output sends

    def catalog(request: gr.Request) -> dict[str, Any]:
        """Attribute names and every class with its kind and attributes."""
        return service.for_visitor(api_visitor(request)).catalog()

    gr.api(predict, api_name="predict", concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict")
    gr.api(
        define_class, api_name="define_class",
        concurrency_limit=CLASS_EDIT_CONCURRENCY, concurrency_id=CLASS_EDIT_ID,
    )  # fmt: skip
    gr.api(delete_class, api_name="delete_class", concurrency_id=CLASS_EDIT_ID)
    gr.api(latent_space, api_name="latent_space")
    gr.api(catalog, api_name="catalog")
    gr.api(
        render_examples, api_name="render_examples",
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict",
    )  # fmt: skip


def add_describe_api(service: StudioService) -> None:
    """``/attributes_from_text`` and ``/attributes_from_images`` (the API side of :mod:`app.describe`)."""

    @api_errors
    def attributes_from_text(text: str) -> dict[str, float]:
        """The attributes a description mentions: {attribute name: value in [0, 1]}."""
        return service.attributes_from_text(text).values

    @api_errors
    def attributes_from_images(images: list[FileData]) -> dict[str, float]:
        """Every attribute's average reading over 1-10 images; unreadable images are skipped (logged)."""
        readings = service.attributes_from_images(uploaded_paths(images))
        for name, reason in readings.refused:
            gr.Warning(f"{name} skipped: {reason}")  # plain text, like the errors of the API
        return readings.average

    gr.api(attributes_from_text, api_name="attributes_from_text")
    gr.api(
        attributes_from_images, api_name="attributes_from_images",
        concurrency_limit=IMAGE_READING_CONCURRENCY, concurrency_id=IMAGE_READING_ID,
    )  # fmt: skip


def prediction_record(prediction: Prediction) -> dict[str, Any]:
    """What ``/predict`` and ``/predict_test_image`` answer: {label, confidences, familiarity, unfamiliar}."""
    return {
        "label": prediction.ranked[0].name,
        "confidences": [{"label": item.name, "confidence": item.probability} for item in prediction.ranked],
        "familiarity": prediction.familiarity,
        "unfamiliar": prediction.unfamiliar,
    }


def add_results_api(service: StudioService) -> None:
    """``/results`` and ``/predict_test_image``: a features-only model's test split (acmr bundle --run)."""

    @api_errors
    def results() -> dict[str, Any]:
        """Per-class test accuracy and top confusions: {metrics: {U, S, H, ...}, classes: [{name, kind,
        images, correct, accuracy, confusions: [{name, kind, images, share}]}], ...}."""
        record = service.results()
        record.pop("images", None)  # per-image answers: thousands of numbers no client asked for
        return record

    @api_errors
    def predict_test_image(class_name: str, index: int, request: gr.Request) -> dict[str, Any]:
        """The answer for the index-th (0-based) test image of a class, as /predict answers an upload, plus
        the image and its true class: {image, class, label, confidences, familiarity, unfamiliar}."""
        visitor = service.for_visitor(api_visitor(request))
        picked = visitor.pick_test_image(class_name, index)
        prediction = visitor.predict_test_image(picked.position, top_k=len(visitor.class_names()))
        return {"image": picked.image_id, "class": picked.class_name, **prediction_record(prediction)}

    gr.api(results, api_name="results")
    gr.api(
        predict_test_image, api_name="predict_test_image",
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict",
    )  # fmt: skip
