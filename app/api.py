"""The documented HTTP endpoints for ``gradio_client`` (see docs/app.md), on the default bundle.

Each API client is a visitor of its own, named by its session (one ``gradio_client.Client``): where the
server keeps classes per visitor, a client sees, changes and predicts with only the classes it defined.

``/predict``, ``/define_class``, ``/delete_class``, ``/latent_space``, ``/catalog`` and ``/render_examples``
here; ``/attributes_from_text`` and ``/attributes_from_images`` in :mod:`app.describe`. The page's own events
are private (the panels, laid out by :mod:`app.ui`). Errors here reach ``gradio_client`` as plain text
(:func:`app.widgets.api_errors`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from acmr_core.errors import ACMRError
from acmr_core.serving.service import StudioService
from app.describe import add_describe_api
from app.widgets import CLASS_EDIT_CONCURRENCY, CLASS_EDIT_ID, PREDICT_CONCURRENCY, api_errors, uploaded_path


def api_visitor(request: gr.Request | None) -> str | None:
    """The visitor an API call acts for: its client session (``None`` if Gradio gives none)."""
    session = getattr(request, "session_hash", None)
    return f"api-{session}" if session else None


def build_api(service: StudioService) -> None:
    """The documented endpoints for gradio_client (default bundle); the UI above uses private events."""
    with gr.Column(visible=False):
        api_image = gr.File(type="filepath", label="image")
        api_prediction = gr.JSON(label="prediction")
        api_name = gr.Textbox(label="name")
        api_attributes = gr.Textbox(label="attributes")
        api_json = gr.JSON(label="result")
        api_plot = gr.Plot(label="latent space")
        triggers = [gr.Button(f"api {index}") for index in range(6)]

    @api_errors
    def predict(image: Any, request: gr.Request) -> dict[str, Any]:
        """Every class's probability, most probable first, and how familiar the image is to the model:
        {label, confidences, familiarity, unfamiliar}."""
        path = uploaded_path(image)
        if not path:
            raise ACMRError("no image given; send an image file")
        visitor = service.for_visitor(api_visitor(request))
        prediction = visitor.predict(path, top_k=len(visitor.class_names()))
        return {
            "label": prediction.ranked[0].name,
            "confidences": [
                {"label": item.name, "confidence": item.probability} for item in prediction.ranked
            ],
            "familiarity": prediction.familiarity,
            "unfamiliar": prediction.unfamiliar,
        }

    @api_errors
    def render_examples(name: str, request: gr.Request) -> list[dict[str, Any]]:
        """Draw a few images of a class (demo-world bundles) and predict each: one record per image."""
        examples = service.for_visitor(api_visitor(request)).render_examples(name)
        return [example.record() for example in examples]

    @api_errors
    def define_class(name: str, attributes: str, request: gr.Request) -> dict:
        """Add a class from a name and a JSON object {attribute name: value in [0, 1]}."""
        return service.for_visitor(api_visitor(request)).define_class_json(name, attributes)

    @api_errors
    def delete_class(name: str, request: gr.Request) -> dict:
        """Delete one of this client's classes."""
        return service.for_visitor(api_visitor(request)).delete_class(name)

    def latent_space(request: gr.Request) -> Any:
        """The latent-space plot (plotly figure)."""
        return service.for_visitor(api_visitor(request)).latent_figure()

    def catalog(request: gr.Request) -> dict:
        """Attribute names and every class with its kind and attributes."""
        return service.for_visitor(api_visitor(request)).catalog()

    triggers[0].click(
        predict, api_image, api_prediction, api_name="predict",
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict",
        preprocess=False,  # the raw upload: see uploaded_paths (gr.File's preprocessing leaves a file each)
    )  # fmt: skip
    triggers[1].click(
        define_class, [api_name, api_attributes], api_json, api_name="define_class",
        concurrency_limit=CLASS_EDIT_CONCURRENCY, concurrency_id=CLASS_EDIT_ID,
    )  # fmt: skip
    triggers[2].click(delete_class, api_name, api_json, api_name="delete_class", concurrency_id=CLASS_EDIT_ID)
    triggers[3].click(latent_space, None, api_plot, api_name="latent_space")
    triggers[4].click(catalog, None, api_json, api_name="catalog")
    triggers[5].click(
        render_examples, api_name, api_json, api_name="render_examples",
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict",
    )  # fmt: skip
    add_describe_api(service, api_errors)
