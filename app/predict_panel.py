"""The *Predict* tab: an image (upload, example or webcam) -> the ranked classes, what the model reads in it,
and where it lands among the classes."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from acmr_core.bundle.familiarity import UNFAMILIAR_NOTICE
from acmr_core.errors import ACMRError
from acmr_core.serving.readings import agreeing_groups, prediction_readings
from acmr_core.serving.results import Prediction
from acmr_core.serving.service import StudioService
from acmr_core.viz.plots import QueryPoint
from app.tables import SEES_COLUMNS, sees_frame
from app.test_picker import TestPicker, test_picker, wire_picker
from app.widgets import PREDICT_CONCURRENCY, ServiceFor, Session, raw_image_input, uploaded_path

log = logging.getLogger(__name__)

PREDICT_HINT = "*The answer appears here: upload an image or click an example.*"
SEES_LABEL = (
    "What the model sees: per attribute group, this image's reading beside the predicted class (✗ = differ)"
)
#: For an image outside the model's world (familiarity below its limit): the table's readings mean little.
SEES_LABEL_OUTSIDE = (
    "What the model sees — its readings mean little here: this image is outside the model's world"
)
RANKED_LABEL = "Top classes (seen / unseen / your class)"
GUESS_LABEL = "Best guess only: this image is outside the model's world"
#: CSS class (app/layout.py) that mutes the ranked classes of an image outside the model's world.
MUTED_CLASS = "muted-guess"
OUTSIDE_HEADLINE = "Outside this model's world"
SEES_EXPLAINED = (
    "Each row is one attribute group: what the model reads in this image beside what the predicted class "
    "has (scores 0–1); ✗ marks where they differ."
)
GAMMA_HELP = (
    "The model learned some classes from photos (seen) and knows others only from their description "
    "(unseen); left alone it favours the seen ones. Higher values favour unseen classes, lower values seen "
    "ones; the default balances both (chosen on held-out data). Type a value and press Enter, or drag."
)
# On a phone the results sit below the examples: bring them into view when an example is tapped.
SCROLL_TO_RESULTS_JS = (
    "() => { if (window.innerWidth < 900) "
    "document.getElementById('predict-results')?.scrollIntoView({behavior: 'smooth'}); }"
)


@dataclass
class PredictPanel:
    """The components of the *Predict* tab."""

    try_row: gr.Row  # "your new class takes part": shown after a class is added
    try_note: gr.Markdown
    try_button: gr.Button
    image: gr.Image
    examples: gr.Gallery
    gamma: gr.Slider
    top_k: gr.Slider
    status: gr.Markdown
    ranked: gr.Label
    sees_summary: gr.Markdown
    sees_table: gr.Dataframe
    plot: gr.Plot
    example_items: list[tuple[str, str]]  # (path, caption) of the example gallery
    picker: TestPicker | None = None  # "pick a test image", for a model that reads no images


def predict_panel(default: StudioService, example_items: list[tuple[str, str]]) -> PredictPanel:
    """Lay out the *Predict* tab (call inside the Blocks)."""
    with gr.Tab("Predict"):
        picker = test_picker(default)
        with gr.Row(visible=False, elem_id="try-your-class") as try_row:
            try_note = gr.Markdown()
            try_button = gr.Button("Try it on the closest example", scale=0, min_width=200)
        with gr.Row():
            with gr.Column(scale=1):
                image = raw_image_input(
                    sources=["upload", "clipboard", "webcam"],
                    label="Image",
                    height=320,
                    elem_id="query-image",
                )
                gr.Markdown(
                    "**Examples**, one per class: click one. *seen*: the model was trained on photos "
                    "of that class; *unseen*: it never saw one.",
                    visible=bool(example_items),
                )
                examples = gr.Gallery(
                    example_items,
                    show_label=False,
                    columns=3,
                    height=420,
                    allow_preview=False,
                    buttons=[],
                    interactive=False,
                    visible=bool(example_items),
                    elem_id="examples",
                )
                with gr.Accordion("Advanced: balance between seen and unseen classes", open=False):
                    gamma = gr.Slider(
                        *gamma_range(default), value=default.default_gamma, step=0.05,
                        label="Seen/unseen balance γ", info=GAMMA_HELP, elem_id="gamma",
                    )  # fmt: skip
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Classes to show")
            with gr.Column(scale=1, elem_id="predict-results"):
                status = gr.Markdown(PREDICT_HINT, elem_id="predict-status")
                ranked = gr.Label(label=RANKED_LABEL, elem_id="top-classes")
                sees_summary = gr.Markdown(elem_id="sees-summary")
                sees_table = gr.Dataframe(
                    headers=SEES_COLUMNS,
                    label=SEES_LABEL,
                    interactive=False,
                    wrap=True,
                    column_widths=["26%", "28%", "29%", "17%"],  # fits a phone: see app.layout's CSS
                    elem_id="sees-table",
                )
        plot = gr.Plot(label="Where your image lands among the classes", elem_id="predict-plot")
    return PredictPanel(
        try_row, try_note, try_button, image, examples, gamma, top_k, status, ranked, sees_summary,
        sees_table, plot, list(example_items), picker,
    )  # fmt: skip


def wire_predict(panel: PredictPanel, session: Session, service_for: ServiceFor) -> Any:
    """Predict on every new image, γ or top-k; returns the prediction event (the latent tab follows it)."""

    def on_predict(
        payload: Any, gamma_value: float, k: float, bundle_name: str, visitor: str | None
    ) -> tuple:
        service = service_for(bundle_name, visitor)
        path = uploaded_path(payload)
        if not path and service.features_only:  # no uploads: the picked test image's answer stays (γ: picker)
            return tuple(gr.skip() for _ in range(8))
        if not path:  # cleared (also after a refused upload): keep any refusal message on screen
            return None, "", None, service.latent_figure(), None, None, gr.skip(), gr.skip()
        try:
            prediction = service.predict(path, gamma=float(gamma_value), top_k=int(k))
        except ACMRError as error:
            # One log line; the reason in the page; no stale result left under it; the broken upload
            # cleared (its change event then lands in the branch above).
            log.warning("refused an upload: %s", error)
            return None, "", None, service.latent_figure(), None, None, refusal_markdown(error), None
        return (*answer_view(service, prediction), gr.skip())

    outputs = [
        panel.ranked, panel.sees_summary, panel.sees_table, panel.plot, session.last_query,
        session.last_latent, panel.status, panel.image,
    ]  # fmt: skip
    predicted = gr.on(
        [panel.image.change, panel.gamma.release, panel.top_k.release],
        on_predict,
        inputs=[panel.image, panel.gamma, panel.top_k, *session.who],
        outputs=outputs,
        concurrency_limit=PREDICT_CONCURRENCY,
        concurrency_id="predict",
        api_visibility="private",
        preprocess=False,  # the raw upload goes to load_image, whatever it is (see uploaded_path)
        # A γ or top-k set while a prediction is still running is applied right after it, never dropped
        # (Gradio's default drops a trigger that arrives while the same event is pending).
        trigger_mode="always_last",
    )
    if panel.picker is not None:
        wire_picker(panel.picker, outputs[:-1], panel.gamma, panel.top_k, session, service_for, answer_view)
    example_items = panel.example_items

    def on_example(event: gr.SelectData) -> str | None:
        return example_items[event.index][0] if 0 <= event.index < len(example_items) else None

    panel.examples.select(on_example, None, panel.image, js=SCROLL_TO_RESULTS_JS, api_visibility="private")
    panel.try_button.click(
        lambda path: path, session.try_path, panel.image, js=SCROLL_TO_RESULTS_JS, api_visibility="private"
    )
    return predicted


def answer_view(service: StudioService, prediction: Prediction) -> tuple:
    """The answer's outputs (labels, what the model sees, the map with the image, the session's query and
    latent, the status line): one view for an upload and a picked test image."""
    query = QueryPoint(prediction.xy, prediction.ranked[0].name)
    outside = prediction.unfamiliar  # then the warning is the headline and the guess is muted below it
    return (
        gr.update(
            value={f"{item.name} · {item.kind}": item.probability for item in prediction.ranked},
            label=GUESS_LABEL if outside else RANKED_LABEL,
            elem_classes=[MUTED_CLASS] if outside else [],
        ),
        sees_markdown(prediction),
        gr.update(value=sees_frame(prediction), label=SEES_LABEL_OUTSIDE if outside else SEES_LABEL),
        service.latent_figure(query=query),
        query,
        prediction.latent,
        outside_markdown(prediction) if outside else "",
    )


def refusal_markdown(error: ACMRError) -> str:
    """A refused upload's reason, one line, escaped (Gradio renders Markdown as HTML)."""
    return f'<span class="refusal">Cannot use this file.</span> {html.escape(str(error), quote=False)}'


def gamma_range(service: StudioService) -> tuple[float, float]:
    """Slider bounds that comfortably include the bundle's validated γ."""
    bound = max(5.0, round(2 * abs(service.default_gamma), 1))
    return -bound, bound


def outside_markdown(prediction: Prediction) -> str:
    """The headline of an image outside the model's world: the warning, before any class name."""
    return (
        f'<div class="outside-world" role="alert"><strong>⚠ {OUTSIDE_HEADLINE}.</strong> '
        f"{html.escape(UNFAMILIAR_NOTICE)} (familiarity {prediction.familiarity:.2f}; 0.5 is this model's "
        "limit)</div>"
    )


def sees_markdown(prediction: Prediction) -> str:
    """The prediction (a muted best guess for an image outside the model's world, whose readings then mean
    little), how many groups agree and what the table shows."""
    top = prediction.ranked[0]
    if prediction.unfamiliar:  # no "N of M agree" for a rocket: the readings of such an image mean little
        return (
            f"*Best guess, for what it is worth:* {html.escape(top.name)} ({top.kind}, "
            f"{top.probability:.0%}). The readings below mean little for an image outside the model's world."
        )
    readings = prediction_readings(prediction)
    grouped = any(reading.group for reading in readings)
    # Ungrouped names (AWA2) give one row per strong attribute, not per group: say which.
    rows = "attribute groups" if grouped else "strongest attributes"
    explained = SEES_EXPLAINED if grouped else SEES_EXPLAINED.replace("one attribute group", "one attribute")
    # A user class added with a separability warning keeps it on every answer it wins (issue 32).
    caution = f"⚠ *{html.escape(prediction.warning, quote=False)}*  \n" if prediction.warning else ""
    return (
        f"**Prediction:** {html.escape(top.name)} ({top.kind}, {top.probability:.0%}).  \n"
        + caution
        + f"**Agreement** with that class: **{agreeing_groups(readings)} of {len(readings)}** {rows} agree "
        f"(overall {prediction.agreement:.2f}; 1 = the same, 0 = nothing in common).  \n{explained}"
    )
