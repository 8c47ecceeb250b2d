"""The Gradio Blocks of the ACMR zero-shot studio: a thin layer over :mod:`acmr_core.serving.service`.

Three tabs (predict, define a class, latent space) plus six API endpoints for ``gradio_client``:
``/predict``, ``/define_class``, ``/delete_class``, ``/latent_space``, ``/catalog`` and ``/render_examples``
(see docs/app.md).
Every handler turns an :class:`~acmr_core.errors.ACMRError` into a visible ``gr.Error``; the message is
HTML-escaped because Gradio renders error text as HTML.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import pandas as pd

from acmr_core.bundle.familiarity import UNFAMILIAR_NOTICE
from acmr_core.errors import ACMRError
from acmr_core.serving.registry import ServiceRegistry
from acmr_core.serving.service import Prediction, RenderedExample, StudioService
from acmr_core.viz.plots import KINDS, QueryPoint
from app import DELETE_CACHE, EXAMPLES_DIR, scratch_folder
from app.describe import add_describe_api, describe_panel
from app.tables import (
    alignment_frame,
    apply_toggles,
    applying,
    attribute_frame,
    describe_markdown,
    frame_to_attributes,
    summary_markdown,
    user_class_frame,
)

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
# Two predictions at once keep both CPU cores busy; class edits are serialised by the service anyway.
PREDICT_CONCURRENCY = 2

HEADER = (
    "# ACMR zero-shot studio\n"
    "**Name what is in a picture, including classes the model never saw a photo of.** "
    "Upload an image or click an example. *Define a class* describes a new class by its attributes "
    "(colour, pattern, …) and the model recognises it at once; *Latent space* shows how well photos and "
    "descriptions line up."
)
ABOUT = (
    "The model is ACMR (aligned cross-modal representations, AAAI 2022). It maps photos and class "
    "descriptions (lists of attributes) into one shared space. A class it never saw a photo of (*unseen*) "
    "is still recognised when a photo lands near that class's description; so is a class you define."
)
PREDICT_HINT = "*The answer appears here: upload an image or click an example.*"
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
#: Typing into a slider's number box applies only on blur; make Enter apply it too (blur on Enter).
APP_HEAD = """<script>
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches?.("#gamma input[type=number]")) event.target.blur();
});
</script>"""
APP_CSS = """
#predict-status:empty, #define-status:empty { display: none; }
#predict-status .prose, #define-status .prose { font-size: 15px; }
.refusal { color: #b00020; font-weight: 600; }
#examples .caption-label { font-size: 11px; white-space: normal; line-height: 1.2; }
/* Long class names wrap at spaces instead of pushing the tables (and the page) wider than a phone. */
#alignment-table td, #alignment-table th, #your-classes td { white-space: normal; overflow-wrap: break-word; }
.gradio-container { max-width: 100vw; }
"""


def app_theme() -> gr.themes.Base:
    """Gradio's default look with the system fonts: the bundled web font lacks some bold capitals, which then
    render in a thin fallback glyph (the "A" of the title); system fonts are also what works offline."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
    )


def user_errors(handler: F) -> F:
    """Show :class:`ACMRError` messages to the user (escaped: Gradio renders them as HTML)."""

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except ACMRError as error:
            log.warning("refused: %s", error)  # one line, no traceback: the user gets the message
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None

    return wrapped  # type: ignore[return-value]


def raw_image_input(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` input whose upload reaches the handler as an undecoded file path.

    ``gr.Image`` opens uploads with PIL before the handler runs, so a non-image or a decompression bomb would
    fail inside Gradio with a generic message; :func:`acmr_core.data.images.load_image` gives the
    specific one.
    (Set on the instance: subclassing a Gradio component writes a .pyi stub next to this module.)
    """
    image = gr.Image(type="filepath", **kwargs)
    decode = image.preprocess

    def undecoded(payload: Any) -> Any:
        path = getattr(payload, "path", None)
        return str(path) if path else decode(payload)

    image.preprocess = undecoded  # type: ignore[method-assign]
    return image


def uploaded_path(payload: Any) -> str | None:
    """The file path of an image input's raw payload, for events run with ``preprocess=False``.

    Gradio re-creates a component (as its plain class) once an event has written to it, which drops the
    instance-level ``preprocess`` of :func:`raw_image_input`; an event whose input is also an output (the
    query image: examples and refusals write to it) therefore skips preprocessing and reads the path here.
    The file has already been moved into Gradio's upload cache and checked to be there.
    """
    if isinstance(payload, dict):
        payload = payload.get("path")
    return str(payload) if payload else None


def build_app(registry: ServiceRegistry, examples_dir: Path = EXAMPLES_DIR) -> gr.Blocks:
    """The whole app; ``registry`` holds the loaded bundle(s) and opens others on demand."""
    default = registry.default()
    example_items = captioned_examples(examples_dir)
    example_of_class = {entry["class"]: entry["path"] for entry in example_entries(examples_dir)}

    def service_for(bundle: str) -> StudioService:
        return registry.get(bundle or registry.default_name)

    with gr.Blocks(title="ACMR zero-shot studio", delete_cache=DELETE_CACHE) as demo:
        bundle = gr.State(registry.default_name)
        last_query = gr.State(None)  # QueryPoint of this session's last prediction
        try_path = gr.State(None)  # the example that best shows the user's newest class

        gr.Markdown(HEADER, elem_id="header")
        with gr.Row(equal_height=True):
            bundle_choice = gr.Dropdown(
                registry.names(),
                value=registry.default_name,
                label="Model",
                scale=1,
                min_width=160,
                elem_id="bundle-choice",
            )
            # min_width: on a phone the line goes below the choice instead of into a narrow column.
            with gr.Column(scale=3, min_width=300):
                bundle_summary = gr.Markdown(summary_markdown(default), elem_id="bundle-summary")
        with gr.Accordion("About this model and how it works", open=False):
            gr.Markdown(ABOUT)
            bundle_info = gr.Markdown(describe_markdown(default))

        with gr.Tab("Predict"):
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
                    predict_status = gr.Markdown(PREDICT_HINT, elem_id="predict-status")
                    ranked = gr.Label(label="Top classes (seen / unseen / your class)", elem_id="top-classes")
                    sees_summary = gr.Markdown(elem_id="sees-summary")
                    sees_table = gr.Dataframe(
                        headers=["attribute", "image reads", "predicted class has"],
                        label="What the model sees: the image decoded into attributes (0–1)",
                        interactive=False,
                        wrap=True,
                    )
            predict_plot = gr.Plot(label="Where your image lands among the classes", elem_id="predict-plot")

        with gr.Tab("Define a class") as define_tab, gr.Row():
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    class_name = gr.Textbox(
                        label="Class name",
                        max_length=80,
                        placeholder="e.g. red dotted ball",
                        scale=3,
                        elem_id="class-name",
                    )
                    add_button = gr.Button("Add class", variant="primary", scale=1, min_width=120)
                define_status = gr.Markdown(elem_id="define-status")
                describe = describe_panel(example_gallery(examples_dir))  # words or example images
                with gr.Row(equal_height=True):
                    start_from = gr.Dropdown(
                        default.class_names(),
                        value=None,
                        label="Start from an existing class (optional)",
                        scale=3,
                        elem_id="start-from",
                    )
                    copy_button = gr.Button("Copy its attributes", scale=1, min_width=100)
                    clear_button = gr.Button("Clear", scale=1, min_width=80)
                toggles = gr.Dropdown(
                    default.attribute_names,
                    multiselect=True,
                    label="Attributes that apply (type to search)",
                    elem_id="attribute-toggles",
                )
                editor = gr.Dataframe(
                    attribute_frame(default),
                    label="All attributes, 0–1 (edit a value for partial strength; the search box filters)",
                    datatype=["str", "str", "number"],
                    static_columns=[0, 1],
                    show_search="filter",
                    max_height=320,
                )
            with gr.Column(scale=2):
                your_classes = gr.Dataframe(
                    user_class_frame(default),
                    label="Your classes",
                    interactive=False,
                    wrap=True,
                    elem_id="your-classes",
                )
                chosen = gr.Dropdown(
                    default.user_class_names(), value=None, label="Your class", elem_id="chosen-class"
                )
                new_name = gr.Textbox(label="New name", max_length=80)
                with gr.Row():
                    rename_button = gr.Button("Rename")
                    delete_button = gr.Button("Delete", variant="stop")
                with gr.Row():
                    export_button = gr.Button("Export JSON")
                    import_button = gr.UploadButton("Import JSON", file_types=[".json"])
                export_file = gr.File(label="Exported classes", interactive=False, height=90)
                show_examples_block(chosen, bundle, service_for)

        with gr.Tab("Latent space") as latent_tab:
            with gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        class_filter = gr.Dropdown(
                            default.class_names(), multiselect=True, label="Only these classes (empty: all)",
                            scale=2, min_width=160,
                        )  # fmt: skip
                        highlight = gr.Dropdown(
                            default.class_names(), value=None, label="Highlight a class", scale=2,
                            min_width=160, elem_id="highlight-class",
                        )  # fmt: skip
                        kind_filter = gr.CheckboxGroup(
                            list(KINDS), value=list(KINDS), label="Show", scale=1, min_width=160
                        )
                    latent_plot = gr.Plot(
                        label="Photos (●) and class descriptions (◆) in the shared space",
                        elem_id="latent-plot",
                    )
                with gr.Column(scale=1, min_width=240):
                    alignment_note = gr.Markdown(alignment_markdown(default), elem_id="alignment-summary")
            alignment = gr.Dataframe(
                alignment_frame(default),
                label="Per class (click a header to sort): are the class's own photos the nearest to its "
                "description? distance = from the description's point to the centre of its photos",
                interactive=False,
                wrap=True,
                elem_id="alignment-table",
            )

        # ---- predict ---------------------------------------------------------------------------------------
        def on_predict(payload: Any, gamma_value: float, k: float, bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            path = uploaded_path(payload)
            if not path:  # cleared (also after a refused upload): keep any refusal message on screen
                return None, "", None, service.latent_figure(), None, gr.skip(), gr.skip()
            try:
                prediction = service.predict(path, gamma=float(gamma_value), top_k=int(k))
            except ACMRError as error:
                # One log line; the reason in the page; no stale result left under it; the broken upload
                # cleared (its change event then lands in the branch above).
                log.warning("refused an upload: %s", error)
                return None, "", None, service.latent_figure(), None, refusal_markdown(error), None
            query = QueryPoint(prediction.xy, prediction.ranked[0].name)
            return (
                {f"{item.name} · {item.kind}": item.probability for item in prediction.ranked},
                sees_markdown(prediction),
                pd.DataFrame(
                    prediction.sees_rows(), columns=["attribute", "image reads", "predicted class has"]
                ),
                service.latent_figure(query=query),
                query,
                "",
                gr.skip(),
            )

        predict_outputs = [ranked, sees_summary, sees_table, predict_plot, last_query, predict_status, image]
        predicted = gr.on(
            [image.change, gamma.release, top_k.release],
            on_predict,
            inputs=[image, gamma, top_k, bundle],
            outputs=predict_outputs,
            concurrency_limit=PREDICT_CONCURRENCY,
            concurrency_id="predict",
            api_visibility="private",
            preprocess=False,  # the raw upload goes to load_image, whatever it is (see uploaded_path)
            # A γ or top-k set while a prediction is still running is applied right after it, never dropped
            # (Gradio's default drops a trigger that arrives while the same event is pending).
            trigger_mode="always_last",
        )

        def on_example(event: gr.SelectData) -> str | None:
            return example_items[event.index][0] if 0 <= event.index < len(example_items) else None

        examples.select(on_example, None, image, js=SCROLL_TO_RESULTS_JS, api_visibility="private")
        try_button.click(
            lambda path: path, try_path, image, js=SCROLL_TO_RESULTS_JS, api_visibility="private"
        )

        # ---- define a class --------------------------------------------------------------------------------
        def class_lists(service: StudioService, keep: str | None = None) -> tuple:
            """Every view of the class list, from the service's current classes (``keep``: a chosen class
            that should stay chosen if it still exists)."""
            names = service.class_names()
            user_names = service.user_class_names()
            return (
                user_class_frame(service),
                gr.update(choices=user_names, value=keep if keep in user_names else None),
                gr.update(choices=names),
                gr.update(choices=names),
                gr.update(choices=names),
                alignment_frame(service),
                alignment_markdown(service),
                describe_markdown(service),
                summary_markdown(service),
            )

        list_outputs = [
            your_classes, chosen, start_from, class_filter, highlight, alignment, alignment_note, bundle_info,
            bundle_summary,
        ]  # fmt: skip

        # The page, and each tab when opened, shows the store as it is now: after a reload, a restart, or an
        # edit made in another browser tab.
        def on_show(chosen_name: str | None, bundle_name: str) -> tuple:
            return class_lists(service_for(bundle_name), keep=chosen_name)

        gr.on(
            [demo.load, define_tab.select, latent_tab.select],
            on_show,
            [chosen, bundle],
            list_outputs,
            api_visibility="private",
        )

        def on_refresh(
            classes: list[str],
            kinds: list[str],
            focus: str | None,
            query: QueryPoint | None,
            bundle_name: str,
        ) -> tuple:
            service = service_for(bundle_name)
            return (
                service.latent_figure(classes, kinds, query, highlight=focus),
                service.latent_figure(query=query),
            )

        # After any change to the classes, both plots show the new class space.
        refresh = {
            "fn": on_refresh,
            "inputs": [class_filter, kind_filter, highlight, last_query, bundle],
            "outputs": [latent_plot, predict_plot],
            "api_visibility": "private",
        }

        @user_errors
        def on_add(name: str, frame: pd.DataFrame, selected: list[str], bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            # The list wins over a table update still in flight: what is shown as "applies" is applied.
            frame = apply_toggles(service, frame, selected or [])
            stored = service.define_class(name, frame_to_attributes(frame))
            message = f"Added **{html.escape(stored['name'])}**: it is now part of every prediction."
            twins = service.near_duplicates(stored["name"])
            if twins:
                shown = ", ".join(f"*{html.escape(twin)}*" for twin in twins[:3])
                message += (
                    f"  \n⚠ It differs from {shown} in at most one attribute, so the model will often "
                    "confuse them; consider making it more distinct."
                )
            note, path = try_markdown(service, stored["name"], example_of_class)
            message += "  \nTry it on the *Predict* tab."
            return (message, gr.update(visible=True), note, path, *class_lists(service))

        add_button.click(
            on_add, [class_name, editor, toggles, bundle],
            [define_status, try_row, try_note, try_path, *list_outputs],
            concurrency_id="classes", concurrency_limit=1, api_visibility="private",
        ).success(**refresh)  # fmt: skip
        # The button is shown only when the closest example exists.
        try_path.change(
            lambda path: gr.update(visible=bool(path)), try_path, try_button, api_visibility="private"
        )

        @user_errors
        def on_copy(source: str | None, bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            if not source:
                raise gr.Error("Pick a class to start from first.")
            values = service.class_values(source)
            return attribute_frame(service, values), applying(values)

        copy_button.click(on_copy, [start_from, bundle], [editor, toggles], api_visibility="private")

        def on_clear(bundle_name: str) -> tuple:
            return "", attribute_frame(service_for(bundle_name)), [], "", None

        clear_button.click(
            on_clear,
            [bundle],
            [class_name, editor, toggles, define_status, start_from],
            api_visibility="private",
        )

        def on_toggle(selected: list[str], frame: pd.DataFrame, bundle_name: str) -> pd.DataFrame:
            return apply_toggles(service_for(bundle_name), frame, selected or [])

        toggles.input(on_toggle, [toggles, editor, bundle], [editor], api_visibility="private")
        describe.wire(service_for, bundle, editor, toggles)

        @user_errors
        def on_rename(old: str | None, new: str, bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            renamed = service.rename_class(old or "", new)
            return ("", f"Renamed to **{html.escape(renamed['name'])}**.", *class_lists(service))

        rename_button.click(
            on_rename, [chosen, new_name, bundle], [new_name, define_status, *list_outputs],
            concurrency_id="classes", api_visibility="private",
        ).success(**refresh)  # fmt: skip

        @user_errors
        def on_delete(name: str | None, bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            removed = service.delete_class(name or "")
            return (f"Deleted **{html.escape(removed['name'])}**.", *class_lists(service))

        delete_button.click(
            on_delete, [chosen, bundle], [define_status, *list_outputs],
            concurrency_id="classes", api_visibility="private",
        ).success(**refresh)  # fmt: skip

        def on_export(bundle_name: str) -> str:
            service = service_for(bundle_name)
            return str(write_export(service.bundle_name, service.export_classes()))

        export_button.click(on_export, [bundle], [export_file], api_visibility="private")

        @user_errors
        def on_import(path: str, bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            added = service.import_classes(Path(path).read_text(encoding="utf-8", errors="replace"))
            return (f"Imported {len(added)} class(es).", *class_lists(service))

        import_button.upload(
            on_import, [import_button, bundle], [define_status, *list_outputs],
            concurrency_id="classes", api_visibility="private",
        ).success(**refresh)  # fmt: skip

        # ---- latent space ----------------------------------------------------------------------------------
        @user_errors
        def on_filter(
            classes: list[str],
            kinds: list[str],
            focus: str | None,
            query: QueryPoint | None,
            bundle_name: str,
        ) -> Any:
            service = service_for(bundle_name)
            return service.latent_figure(classes=classes, kinds=kinds, query=query, highlight=focus)

        demo.load(
            lambda name: service_for(name).latent_figure(), bundle, predict_plot, api_visibility="private"
        )
        # The latent tab highlights the last uploaded image too.
        filter_inputs = [class_filter, kind_filter, highlight, last_query, bundle]
        predicted.success(on_filter, filter_inputs, latent_plot, api_visibility="private")
        gr.on(
            [class_filter.change, kind_filter.change, highlight.change, demo.load],
            on_filter,
            inputs=filter_inputs,
            outputs=latent_plot,
            api_visibility="private",
        )

        # ---- bundle switch ---------------------------------------------------------------------------------
        @user_errors
        def on_bundle(name: str) -> tuple:
            service = service_for(name)
            return (
                name,
                gr.update(
                    value=service.default_gamma,
                    minimum=gamma_range(service)[0],
                    maximum=gamma_range(service)[1],
                ),
                attribute_frame(service),
                gr.update(choices=service.attribute_names, value=[]),
                None,
                *class_lists(service),
                service.latent_figure(),
            )

        switch = bundle_choice.input(
            on_bundle,
            [bundle_choice],
            [bundle, gamma, editor, toggles, last_query, *list_outputs, latent_plot],
            api_visibility="private",
        )
        # A bundle that cannot be opened leaves the session on the previous one: show that one again.
        switch.failure(lambda current: current, [bundle], [bundle_choice], api_visibility="private")

        build_api(default)
    return demo


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

    @user_errors
    def predict(image: str) -> dict[str, Any]:
        """Every class's probability, most probable first, and how familiar the image is to the model:
        {label, confidences, familiarity, unfamiliar}."""
        if not image:
            raise ACMRError("no image given; send an image file")
        prediction = service.predict(image, top_k=len(service.class_names()))
        return {
            "label": prediction.ranked[0].name,
            "confidences": [
                {"label": item.name, "confidence": item.probability} for item in prediction.ranked
            ],
            "familiarity": prediction.familiarity,
            "unfamiliar": prediction.unfamiliar,
        }

    @user_errors
    def render_examples(name: str) -> list[dict[str, Any]]:
        """Draw a few images of a class (demo-world bundles) and predict each: one record per image."""
        return [example.record() for example in service.render_examples(name)]

    @user_errors
    def define_class(name: str, attributes: str) -> dict:
        """Add a class from a name and a JSON object {attribute name: value in [0, 1]}."""
        return service.define_class_json(name, attributes)

    @user_errors
    def delete_class(name: str) -> dict:
        """Delete one of the user-defined classes."""
        return service.delete_class(name)

    def latent_space() -> Any:
        """The latent-space plot (plotly figure)."""
        return service.latent_figure()

    def catalog() -> dict:
        """Attribute names and every class with its kind and attributes."""
        return service.catalog()

    triggers[0].click(
        predict, api_image, api_prediction, api_name="predict",
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict",
    )  # fmt: skip
    triggers[1].click(
        define_class, [api_name, api_attributes], api_json, api_name="define_class",
        concurrency_limit=1, concurrency_id="classes",
    )  # fmt: skip
    triggers[2].click(delete_class, api_name, api_json, api_name="delete_class", concurrency_id="classes")
    triggers[3].click(latent_space, None, api_plot, api_name="latent_space")
    triggers[4].click(catalog, None, api_json, api_name="catalog")
    triggers[5].click(
        render_examples, api_name, api_json, api_name="render_examples",
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict",
    )  # fmt: skip
    add_describe_api(service, user_errors)


def show_examples_block(chosen: gr.Dropdown, bundle: gr.State, service_for: Callable) -> None:
    """The "Show examples" action: draw images of the chosen user class (demo world), show the answers."""
    button = gr.Button("Show examples", elem_id="show-examples")
    status = gr.Markdown(elem_id="examples-status")
    gallery = gr.Gallery(
        label="Drawn images of your class (never trained on) and the model's answer",
        columns=4,
        height="auto",
        elem_id="class-examples",
    )

    @user_errors
    def on_show(name: str | None, bundle_name: str) -> tuple:
        if not name:
            raise gr.Error("Pick one of your classes first.")
        examples = service_for(bundle_name).render_examples(name)
        return examples_markdown(name, examples), [(item.image, example_caption(item)) for item in examples]

    button.click(
        on_show, [chosen, bundle], [status, gallery],
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict", api_visibility="private",
    )  # fmt: skip


def examples_markdown(name: str, examples: list[RenderedExample]) -> str:
    recognised = sum(item.recognised for item in examples)
    return (
        f"**{html.escape(name)}**: {recognised} of {len(examples)} drawn images recognised as your class "
        "(all classes compete)."
    )


def example_caption(example: RenderedExample) -> str:
    top = example.prediction.ranked[0]
    mark = "✓" if example.recognised else "✗"
    return f"{mark} {top.name} ({top.kind}, {top.probability:.0%})"


def example_entries(folder: Path) -> list[dict[str, str]]:
    """One example image per class (the first listed in the folder's index.json): path, class and kind.

    Without a usable index, every PNG of the folder (class and kind unknown).
    """
    index_file = folder / "index.json"
    try:
        entries = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else []
    except (OSError, ValueError):
        entries = []
    first_per_class: dict[str, dict[str, str]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and (folder / str(entry.get("file", ""))).is_file():
            first_per_class.setdefault(
                str(entry.get("class")),
                {
                    "path": str(folder / entry["file"]),
                    "class": str(entry.get("class")),
                    "kind": str(entry.get("kind", "")),
                },
            )
    if first_per_class:
        return list(first_per_class.values())
    return [{"path": str(path), "class": "", "kind": ""} for path in sorted(folder.glob("*.png"))]


def example_gallery(folder: Path) -> list[str]:
    """The example images' paths (see :func:`example_entries`)."""
    return [entry["path"] for entry in example_entries(folder)]


def captioned_examples(folder: Path) -> list[tuple[str, str]]:
    """(path, caption) per example: its class and whether the model saw photos of it in training."""
    return [
        (entry["path"], f"{entry['class']} ({entry['kind']})" if entry["class"] else Path(entry["path"]).stem)
        for entry in example_entries(folder)
    ]


def write_export(bundle_name: str, text: str) -> Path:
    """The export file, in this process's scratch folder (one file per bundle, replaced by the next export;
    Gradio serves its own copy, and the folder goes when the app stops)."""
    folder = scratch_folder() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bundle_name}-user-classes.json"
    partial = path.with_suffix(f".{os.getpid()}.{id(text)}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)  # atomic: a concurrent export never serves a half-written file
    return path


def refusal_markdown(error: ACMRError) -> str:
    """A refused upload's reason, one line, escaped (Gradio renders Markdown as HTML)."""
    return f'<span class="refusal">Cannot use this file.</span> {html.escape(str(error), quote=False)}'


def alignment_markdown(service: StudioService) -> str:
    """The overall alignment figure with its meaning in plain words, and how to read the map."""
    summary = service.alignment_summary()
    figure = f"{summary.fraction:.0%}" if summary.classes_with_images else "–"
    return (
        f"### Alignment: {figure}\n{html.escape(summary.sentence(), quote=False)}\n\n"
        "**Reading the map.** Each dot is a photo, each diamond a class's description, placed so "
        "that similar things are near (the axes themselves mean nothing). A short line from a diamond "
        "to the centre of its photos means description and photos agree. Colours: blue = learned from "
        "photos (seen), orange = known only from a description (unseen), green ★ = yours. Hover a point "
        "for its class; pick one in *Highlight a class*."
    )


def try_markdown(
    service: StudioService, name: str, example_of_class: dict[str, str]
) -> tuple[str, str | None]:
    """The Predict tab's note about a newly added class, and the example closest to it (if any)."""
    nearest = next((item.nearest for item in service.alignment() if item.name == name), "")
    path = example_of_class.get(nearest)
    note = (
        f"**Your class “{html.escape(name)}” now takes part in every prediction.** Upload a photo of one"
        + (
            f", or try the example of the closest class the model has photos of (*{html.escape(nearest)}*)."
            if path
            else "."
        )
    )
    return note, path


def gamma_range(service: StudioService) -> tuple[float, float]:
    """Slider bounds that comfortably include the bundle's validated γ."""
    bound = max(5.0, round(2 * abs(service.default_gamma), 1))
    return -bound, bound


def sees_markdown(prediction: Prediction) -> str:
    top = prediction.ranked[0]
    notice = (
        f"⚠ **{UNFAMILIAR_NOTICE}** (familiarity {prediction.familiarity:.2f}; 0.5 is this model's limit)  \n"
        if prediction.unfamiliar
        else ""
    )
    return (
        notice + f"**Prediction:** {html.escape(top.name)} ({top.kind}, {top.probability:.0%}).  \n"
        f"**Agreement** between what the image reads and that class's attributes: "
        f"{prediction.agreement:.2f} (1 = the same, 0 = nothing in common)."
    )
