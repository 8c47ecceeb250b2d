"""The Gradio Blocks of the ACMR zero-shot studio: a thin layer over :mod:`acmr_core.service`.

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
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import pandas as pd

from acmr_core.errors import ACMRError
from acmr_core.familiarity import UNFAMILIAR_NOTICE
from acmr_core.plots import KINDS, QueryPoint
from acmr_core.service import Prediction, RenderedExample, ServiceRegistry, StudioService
from app import EXAMPLES_DIR

F = TypeVar("F", bound=Callable[..., Any])
# Two predictions at once keep both CPU cores busy; class edits are serialised by the service anyway.
PREDICT_CONCURRENCY = 2


def user_errors(handler: F) -> F:
    """Show :class:`ACMRError` messages to the user (escaped: Gradio renders them as HTML)."""

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except ACMRError as error:
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None

    return wrapped  # type: ignore[return-value]


def raw_image_input(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` input whose upload reaches the handler as an undecoded file path.

    ``gr.Image`` opens uploads with PIL before the handler runs, so a non-image or a decompression bomb would
    fail inside Gradio with a generic message; :func:`acmr_core.images.load_image` gives the specific one.
    (Set on the instance: subclassing a Gradio component writes a .pyi stub next to this module.)
    """
    image = gr.Image(type="filepath", **kwargs)
    decode = image.preprocess

    def undecoded(payload: Any) -> Any:
        path = getattr(payload, "path", None)
        return str(path) if path else decode(payload)

    image.preprocess = undecoded  # type: ignore[method-assign]
    return image


def build_app(registry: ServiceRegistry, examples_dir: Path = EXAMPLES_DIR) -> gr.Blocks:
    """The whole app; ``registry`` holds the loaded bundle(s) and opens others on demand."""
    default = registry.default()

    def service_for(bundle: str) -> StudioService:
        return registry.get(bundle or registry.default_name)

    with gr.Blocks(title="ACMR zero-shot studio") as demo:
        bundle = gr.State(registry.default_name)
        last_query = gr.State(None)  # QueryPoint of this session's last prediction

        gr.Markdown(
            "# ACMR zero-shot studio\nGeneralized zero-shot classification with aligned cross-modal "
            "representations (ACMR, AAAI 2022): images and class descriptions share one latent space, so the "
            "model can name classes it never saw — and classes you define here."
        )
        with gr.Row():
            bundle_choice = gr.Dropdown(
                registry.names(),
                value=registry.default_name,
                label="Model bundle",
                scale=1,
                elem_id="bundle-choice",
            )
            bundle_info = gr.Markdown(default.describe_markdown())

        with gr.Tab("Predict"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = raw_image_input(
                        sources=["upload", "clipboard", "webcam"],
                        label="Image",
                        height=320,
                        elem_id="query-image",
                    )
                    examples = example_gallery(examples_dir)
                    if examples:
                        gr.Examples(
                            examples, inputs=image, examples_per_page=12,
                            label="Example images (demo world, one per class; click one)",
                        )  # fmt: skip
                    with gr.Accordion("Advanced", open=False):
                        gamma = gr.Slider(
                            *gamma_range(default), value=default.default_gamma, step=0.05,
                            label="Seen-class calibration γ (subtracted from seen-class scores)",
                            info="The default was chosen on the bundle's validation split.",
                        )  # fmt: skip
                        top_k = gr.Slider(1, 10, value=5, step=1, label="Classes to show")
                with gr.Column(scale=1):
                    ranked = gr.Label(label="Top classes (seen / unseen / your class)", elem_id="top-classes")
                    sees_summary = gr.Markdown(elem_id="sees-summary")
                    sees_table = gr.Dataframe(
                        headers=["attribute", "image reads", "predicted class has"],
                        label="What the model sees: the image's latent decoded into attributes",
                        interactive=False,
                    )
            predict_plot = gr.Plot(label="Where your image lands in the latent space")

        with gr.Tab("Define a class"), gr.Row():
            with gr.Column(scale=3):
                class_name = gr.Textbox(
                    label="Class name",
                    max_length=80,
                    placeholder="e.g. red dotted ball",
                    elem_id="class-name",
                )
                with gr.Row():
                    start_from = gr.Dropdown(default.class_names(), label="Start from class", scale=3)
                    copy_button = gr.Button("Copy its attributes", scale=1)
                    clear_button = gr.Button("Clear", scale=1)
                toggles = gr.Dropdown(
                    default.attribute_names,
                    multiselect=True,
                    label="Attributes that apply (type to search)",
                    elem_id="attribute-toggles",
                )
                editor = gr.Dataframe(
                    default.attribute_frame(),
                    label="All attributes, 0–1 (edit a value for partial strength; the search box filters)",
                    datatype=["str", "str", "number"],
                    static_columns=[0, 1],
                    show_search="filter",
                    max_height=420,
                )
                add_button = gr.Button("Add class", variant="primary")
                define_status = gr.Markdown(elem_id="define-status")
            with gr.Column(scale=2):
                your_classes = gr.Dataframe(
                    default.user_class_frame(),
                    label="Your classes",
                    interactive=False,
                    elem_id="your-classes",
                )
                chosen = gr.Dropdown(default.user_class_names(), label="Your class", elem_id="chosen-class")
                new_name = gr.Textbox(label="New name", max_length=80)
                with gr.Row():
                    rename_button = gr.Button("Rename")
                    delete_button = gr.Button("Delete", variant="stop")
                with gr.Row():
                    export_button = gr.Button("Export JSON")
                    import_button = gr.UploadButton("Import JSON", file_types=[".json"])
                export_file = gr.File(label="Exported classes", interactive=False)
                show_examples_block(chosen, bundle, service_for)

        with gr.Tab("Latent space"):
            with gr.Row():
                class_filter = gr.Dropdown(
                    default.class_names(), multiselect=True, label="Only these classes (empty: all)", scale=3
                )
                kind_filter = gr.CheckboxGroup(list(KINDS), value=list(KINDS), label="Show", scale=1)
            latent_plot = gr.Plot(label="Visual latents (images) and semantic latents (class prototypes)")
            alignment = gr.Dataframe(
                default.alignment_frame(),
                label="Per-class alignment (click a header to sort): distance from a class prototype to the "
                "centroid of its images, and whether its nearest image centroid is its own",
                interactive=False,
            )

        # ---- predict ---------------------------------------------------------------------------------------
        @user_errors
        def on_predict(path: str | None, gamma_value: float, k: float, bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            if not path:
                return None, "", None, service.latent_figure(), None
            prediction = service.predict(path, gamma=gamma_value, top_k=int(k))
            query = QueryPoint(prediction.xy, prediction.ranked[0].name)
            return (
                {f"{item.name} · {item.kind}": item.probability for item in prediction.ranked},
                sees_markdown(prediction),
                pd.DataFrame(
                    prediction.sees_rows(), columns=["attribute", "image reads", "predicted class has"]
                ),
                service.latent_figure(query=query),
                query,
            )

        predict_outputs = [ranked, sees_summary, sees_table, predict_plot, last_query]
        predicted = gr.on(
            [image.change, gamma.release, top_k.release],
            on_predict,
            inputs=[image, gamma, top_k, bundle],
            outputs=predict_outputs,
            concurrency_limit=PREDICT_CONCURRENCY,
            concurrency_id="predict",
            api_visibility="private",
        )

        # ---- define a class --------------------------------------------------------------------------------
        def class_lists(service: StudioService) -> tuple:
            names = service.class_names()
            return (
                service.user_class_frame(),
                gr.update(choices=service.user_class_names(), value=None),
                gr.update(choices=names),
                gr.update(choices=names),
                service.alignment_frame(),
                service.describe_markdown(),
            )

        list_outputs = [your_classes, chosen, start_from, class_filter, alignment, bundle_info]

        def on_refresh(
            classes: list[str], kinds: list[str], query: QueryPoint | None, bundle_name: str
        ) -> tuple:
            service = service_for(bundle_name)
            return service.latent_figure(classes, kinds, query), service.latent_figure(query=query)

        # After any change to the classes, both plots show the new class space.
        refresh = {
            "fn": on_refresh,
            "inputs": [class_filter, kind_filter, last_query, bundle],
            "outputs": [latent_plot, predict_plot],
            "api_visibility": "private",
        }

        @user_errors
        def on_add(name: str, frame: pd.DataFrame, selected: list[str], bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            # The list wins over a table update still in flight: what is shown as "applies" is applied.
            frame = service.apply_toggles(frame, selected or [])
            stored = service.define_class(name, service.frame_to_attributes(frame))
            message = f"Added **{html.escape(stored['name'])}**: it is now part of every prediction."
            return (message, *class_lists(service))

        add_button.click(
            on_add, [class_name, editor, toggles, bundle], [define_status, *list_outputs],
            concurrency_id="classes", concurrency_limit=1, api_visibility="private",
        ).success(**refresh)  # fmt: skip

        @user_errors
        def on_copy(source: str | None, bundle_name: str) -> tuple:
            service = service_for(bundle_name)
            if not source:
                raise gr.Error("Pick a class to start from first.")
            values = service.class_values(source)
            return service.attribute_frame(values), [n for n, v in values.items() if v >= 0.5]

        copy_button.click(on_copy, [start_from, bundle], [editor, toggles], api_visibility="private")

        def on_clear(bundle_name: str) -> tuple:
            return "", service_for(bundle_name).attribute_frame(), [], ""

        clear_button.click(
            on_clear, [bundle], [class_name, editor, toggles, define_status], api_visibility="private"
        )

        def on_toggle(selected: list[str], frame: pd.DataFrame, bundle_name: str) -> pd.DataFrame:
            return service_for(bundle_name).apply_toggles(frame, selected or [])

        toggles.input(on_toggle, [toggles, editor, bundle], [editor], api_visibility="private")

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
            folder = Path(tempfile.mkdtemp(prefix="acmr-export-"))
            path = folder / f"{service.bundle_name}-user-classes.json"
            path.write_text(service.export_classes(), encoding="utf-8")
            return str(path)

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
            classes: list[str], kinds: list[str], query: QueryPoint | None, bundle_name: str
        ) -> Any:
            return service_for(bundle_name).latent_figure(classes=classes, kinds=kinds, query=query)

        demo.load(
            lambda name: service_for(name).latent_figure(), bundle, predict_plot, api_visibility="private"
        )
        # The latent tab highlights the last uploaded image too.
        predicted.success(
            on_filter, [class_filter, kind_filter, last_query, bundle], latent_plot, api_visibility="private"
        )
        gr.on(
            [class_filter.change, kind_filter.change, demo.load],
            on_filter,
            inputs=[class_filter, kind_filter, last_query, bundle],
            outputs=latent_plot,
            api_visibility="private",
        )

        # ---- bundle switch ---------------------------------------------------------------------------------
        @user_errors
        def on_bundle(name: str) -> tuple:
            service = service_for(name)
            return (
                name,
                service.describe_markdown(),
                gr.update(
                    value=service.default_gamma,
                    minimum=gamma_range(service)[0],
                    maximum=gamma_range(service)[1],
                ),
                service.attribute_frame(),
                gr.update(choices=service.attribute_names, value=[]),
                None,
                *class_lists(service),
                service.latent_figure(),
            )

        switch = bundle_choice.input(
            on_bundle,
            [bundle_choice],
            [bundle, bundle_info, gamma, editor, toggles, last_query, *list_outputs, latent_plot],
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


def example_gallery(folder: Path) -> list[str]:
    """One example image per class (the first listed in the folder's index.json), else every PNG."""
    index_file = folder / "index.json"
    try:
        entries = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else []
    except (OSError, ValueError):
        entries = []
    first_per_class: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and (folder / str(entry.get("file", ""))).is_file():
            first_per_class.setdefault(str(entry.get("class")), str(folder / entry["file"]))
    return list(first_per_class.values()) or sorted(str(path) for path in folder.glob("*.png"))


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
        f"{prediction.agreement:.2f} (cosine, 1 = identical)."
    )
