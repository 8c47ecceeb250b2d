"""The *Define a class* tab: describe a new class by its attributes (by hand, from words or from example
images), add it, and manage your classes (rename, delete, export, import, show drawn examples)."""

from __future__ import annotations

import functools
import html
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import pandas as pd

from acmr_core.errors import ACMRError, UserClassError
from acmr_core.serving.results import DraftPreview, RenderedExample
from acmr_core.serving.service import StudioService
from acmr_core.viz.plots import QueryPoint
from app.describe import DescribePanel, describe_panel
from app.paths import scratch_folder
from app.predict_panel import PredictPanel
from app.tables import (
    apply_toggles,
    applying,
    attribute_frame,
    frame_to_attributes,
    user_class_frame,
)
from app.widgets import (
    CLASS_EDIT_CONCURRENCY,
    CLASS_EDIT_ID,
    PREDICT_CONCURRENCY,
    ServiceFor,
    Session,
    uploaded_path,
    user_errors,
)

#: Every view of the class list, from a service's current classes (``keep``: a chosen class that should stay
#: chosen if it still exists); built in :mod:`app.ui`, whose components span the tabs.
ClassViewValues = Callable[..., tuple]
F = TypeVar("F", bound=Callable[..., Any])
#: What the draft preview says before any attribute is set.
DRAFT_HINT = "Set attributes on the left: your draft appears on the map (✩) as you edit, before you add it."
#: Draft previews run two at a time in their own group (each edit triggers one; only the last one counts).
PREVIEW_CONCURRENCY = 2
log = logging.getLogger(__name__)


@dataclass
class DefinePanel:
    """The components of the *Define a class* tab."""

    tab: gr.Tab
    class_name: gr.Textbox
    add_button: gr.Button
    status: gr.Markdown
    describe: DescribePanel
    start_from: gr.Dropdown
    copy_button: gr.Button
    clear_button: gr.Button
    toggles: gr.Dropdown
    editor: gr.Dataframe
    your_classes: gr.Dataframe
    chosen: gr.Dropdown
    new_name: gr.Textbox
    rename_button: gr.Button
    delete_button: gr.Button
    export_button: gr.Button
    import_button: gr.UploadButton
    export_file: gr.File
    draft_plot: gr.Plot
    draft_note: gr.Markdown


def define_panel(
    default: StudioService, example_paths: list[str], session: Session, service_for: ServiceFor
) -> DefinePanel:
    """Lay out the *Define a class* tab (call inside the Blocks)."""
    shared = default.shares_classes  # one set of classes for everyone: nobody's "yours"
    with gr.Tab("Define a class") as tab, gr.Row(elem_id="define-row"):
        with gr.Column(scale=3, elem_id="define-editing"):
            with gr.Row(equal_height=True):
                class_name = gr.Textbox(
                    label="Class name",
                    max_length=80,
                    placeholder="e.g. red dotted ball",
                    scale=3,
                    min_width=200,
                    elem_id="class-name",
                )
                add_button = gr.Button("Add class", variant="primary", scale=1, min_width=100)
                examples_button = gr.Button("Show examples", scale=1, min_width=100, elem_id="show-examples")
            status = gr.Markdown(elem_id="define-status")
            examples = examples_block()
            describe = describe_panel(example_paths)  # words or example images
            with gr.Row(equal_height=True):
                start_from = gr.Dropdown(
                    default.class_names(),
                    value=None,
                    label="Start from an existing class (optional)",
                    scale=3,
                    min_width=200,
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
                label="All attributes, 0–1 (type a value for partial strength)",
                datatype=["str", "str", "number"],
                static_columns=[0, 1],
                show_search="filter",
                max_height=320,
                column_widths=["26%", "52%", "22%"],
                elem_id="attribute-editor",
            )
        with gr.Column(scale=2, elem_id="define-side"):
            # Live preview (issue 25): the draft moves on the map while its attributes are edited. It stays
            # in view while the page scrolls to the editor (see app.layout's CSS).
            with gr.Column(elem_id="draft-box"):
                draft_note = gr.Markdown(DRAFT_HINT, elem_id="draft-preview")
                draft_plot = gr.Plot(
                    label="Where your draft lands among the class descriptions (photos: Latent space tab)",
                    elem_id="draft-plot",
                )
            your_classes = gr.Dataframe(
                user_class_frame(default),
                label="Classes added here (everyone using this app shares them)"
                if shared
                else "Your classes",
                interactive=False,
                wrap=True,
                column_widths=["27%", "48%", "25%"],
                elem_id="your-classes",
            )
            chosen = gr.Dropdown(
                default.user_class_names(), value=None, label="Added class" if shared else "Your class",
                elem_id="chosen-class",
            )  # fmt: skip
            new_name = gr.Textbox(label="New name", max_length=80)
            with gr.Row():
                rename_button = gr.Button("Rename")
                delete_button = gr.Button("Delete", variant="stop")
            with gr.Row():
                export_button = gr.Button("Export JSON")
                import_button = gr.UploadButton("Import JSON", file_types=[".json"])
            export_file = gr.File(
                label="Exported classes", interactive=False, height=90, elem_id="export-file"
            )
    wire_examples(examples_button, *examples, chosen, session, service_for)
    return DefinePanel(
        tab, class_name, add_button, status, describe, start_from, copy_button, clear_button, toggles, editor,
        your_classes, chosen, new_name, rename_button, delete_button, export_button, import_button,
        export_file, draft_plot, draft_note,
    )  # fmt: skip


def wire_define(
    panel: DefinePanel,
    predict: PredictPanel,
    session: Session,
    service_for: ServiceFor,
    class_views: ClassViewValues,
    view_outputs: list[Any],
    refresh: dict[str, Any],
    example_of_class: dict[str, str],
) -> None:
    """Connect the tab's actions; every class edit updates ``view_outputs`` and then runs ``refresh``."""
    bundle = session.bundle
    who = session.who  # the bundle and the visitor: whose classes an edit changes

    @refusals_in_status(status_at=0, outputs=4 + len(view_outputs))
    def on_add(
        name: str, frame: pd.DataFrame, selected: list[str], bundle_name: str, visitor: str | None
    ) -> tuple:
        service = service_for(bundle_name, visitor)
        # The list wins over a table update still in flight: what is shown as "applies" is applied.
        frame = apply_toggles(service, frame, selected or [])
        stored = service.define_class(name, frame_to_attributes(frame))
        message = f"Added **{html.escape(stored['name'])}**: it is now part of every prediction."
        if stored["assumed"]:  # groups the description left empty, filled in so the class can be drawn
            assumed = ", ".join(f"{group} *{value}*" for group, value in stored["assumed"].items())
            message += f"  \nNot given, so assumed (the most common in this world): {assumed}."
        if stored["warning"]:  # the model cannot tell it apart from another class (issue 32)
            message += f"  \n⚠ **Added with a warning.** {html.escape(stored['warning']['message'])}"
        note, path = try_markdown(service, stored["name"], example_of_class)
        message += "  \nTry it on the *Predict* tab."
        # The new class becomes "Your class", so "Show examples" draws it without another pick.
        return (message, gr.update(visible=True), note, path, *class_views(service, keep=stored["name"]))

    panel.add_button.click(
        on_add, [panel.class_name, panel.editor, panel.toggles, *who],
        [panel.status, predict.try_row, predict.try_note, session.try_path, *view_outputs],
        concurrency_id=CLASS_EDIT_ID, concurrency_limit=CLASS_EDIT_CONCURRENCY, api_visibility="private",
    ).success(**refresh)  # fmt: skip
    # The button is shown only when the closest example exists.
    session.try_path.change(
        lambda path: gr.update(visible=bool(path)), session.try_path, predict.try_button,
        api_visibility="private",
    )  # fmt: skip

    @user_errors
    def on_copy(source: str | None, bundle_name: str, visitor: str | None) -> tuple:
        service = service_for(bundle_name, visitor)
        if not source:
            raise gr.Error("Pick a class to start from first.")
        values = service.class_values(source)
        return attribute_frame(service, values), applying(values)

    panel.copy_button.click(
        on_copy, [panel.start_from, *who], [panel.editor, panel.toggles], api_visibility="private"
    )

    def on_clear(bundle_name: str) -> tuple:
        return "", attribute_frame(service_for(bundle_name)), [], "", None

    panel.clear_button.click(
        on_clear,
        [bundle],
        [panel.class_name, panel.editor, panel.toggles, panel.status, panel.start_from],
        api_visibility="private",
    )

    def on_toggle(selected: list[str], frame: pd.DataFrame, bundle_name: str) -> pd.DataFrame:
        return apply_toggles(service_for(bundle_name), frame, selected or [])

    panel.toggles.input(
        on_toggle, [panel.toggles, panel.editor, bundle], [panel.editor], api_visibility="private"
    )
    panel.describe.wire(service_for, bundle, panel.editor, panel.toggles)
    wire_draft_preview(panel, session, service_for)

    @refusals_in_status(status_at=1, outputs=2 + len(view_outputs))
    def on_rename(old: str | None, new: str, bundle_name: str, visitor: str | None) -> tuple:
        service = service_for(bundle_name, visitor)
        renamed = service.rename_class(old or "", new)
        return ("", f"Renamed to **{html.escape(renamed['name'])}**.", *class_views(service))

    panel.rename_button.click(
        on_rename, [panel.chosen, panel.new_name, *who], [panel.new_name, panel.status, *view_outputs],
        concurrency_id=CLASS_EDIT_ID, api_visibility="private",
    ).success(**refresh)  # fmt: skip

    @refusals_in_status(status_at=0, outputs=1 + len(view_outputs))
    def on_delete(name: str | None, bundle_name: str, visitor: str | None) -> tuple:
        service = service_for(bundle_name, visitor)
        removed = service.delete_class(name or "")
        return (f"Deleted **{html.escape(removed['name'])}**.", *class_views(service))

    panel.delete_button.click(
        on_delete, [panel.chosen, *who], [panel.status, *view_outputs],
        concurrency_id=CLASS_EDIT_ID, api_visibility="private",
    ).success(**refresh)  # fmt: skip

    def on_export(bundle_name: str, visitor: str | None) -> str:
        service = service_for(bundle_name, visitor)
        return str(write_export(service.bundle_name, service.export_classes()))

    panel.export_button.click(on_export, who, [panel.export_file], api_visibility="private")

    @refusals_in_status(status_at=0, outputs=1 + len(view_outputs))
    def on_import(upload: Any, bundle_name: str, visitor: str | None) -> tuple:
        service = service_for(bundle_name, visitor)
        path = uploaded_path(upload)
        if not path:
            raise UserClassError("choose a JSON file to import")
        added = service.import_classes(Path(path).read_text(encoding="utf-8", errors="replace"))
        return (f"Imported {len(added)} class(es).", *class_views(service))

    panel.import_button.upload(
        on_import, [panel.import_button, *who], [panel.status, *view_outputs],
        concurrency_id=CLASS_EDIT_ID, api_visibility="private",
        preprocess=False,  # the raw upload (see app.widgets.uploaded_paths: no stray temporary file)
    ).success(**refresh)  # fmt: skip


def wire_draft_preview(panel: DefinePanel, session: Session, service_for: ServiceFor) -> None:
    """Every change to the draft's attributes (typed, toggled, copied, read from words or images) moves its
    point on the map and updates its nearest classes and how it compares on the last image: no fit, so it
    keeps up with editing (benchmarks/draft_preview.py)."""

    def on_draft(
        frame: pd.DataFrame, name: str, query: Any, latent: Any, bundle_name: str, visitor: str | None
    ) -> tuple:
        service = service_for(bundle_name, visitor)
        try:
            preview = service.preview_class(frame_to_attributes(frame), latent)
        except ACMRError as error:  # nothing set yet, or a cell that is no number: say so, show the map
            figure = service.latent_figure(query=query, photos=False)
            return figure, f"{DRAFT_HINT}  \n*{html.escape(str(error))}*"
        draft = QueryPoint(preview.xy, " ".join((name or "").split()) or "your draft")
        # Descriptions only: redrawn on every edit, the full map (photos, lines) took the browser 0.25 s.
        return service.latent_figure(query=query, draft=draft, photos=False), draft_markdown(preview)

    def on_toggled(selected: list[str], frame: pd.DataFrame, *rest: Any) -> tuple:
        # Beside the table's own update, not after it: the point moves one round trip sooner (a toggle is
        # the usual edit); the table's change then asks again, for the same answer.
        service = service_for(*rest[-2:])
        return on_draft(apply_toggles(service, frame, selected or []), *rest)

    context = [panel.class_name, session.last_query, session.last_latent, *session.who]
    options: dict[str, Any] = {
        "outputs": [panel.draft_plot, panel.draft_note], "concurrency_limit": PREVIEW_CONCURRENCY,
        "concurrency_id": "draft_preview", "trigger_mode": "always_last", "show_progress": "hidden",
        "api_visibility": "private",
    }  # fmt: skip
    panel.editor.change(on_draft, [panel.editor, *context], **options)
    # The draft's label on the map follows its name as it is typed.
    panel.class_name.change(on_draft, [panel.editor, *context], **options)
    panel.toggles.input(on_toggled, [panel.toggles, panel.editor, *context], **options)


def draft_markdown(preview: DraftPreview) -> str:
    nearest = ", ".join(f"*{html.escape(item.name)}* ({item.distance:.2f})" for item in preview.nearest)
    text = f"**Your draft (✩ on the map) is nearest to** {nearest}."
    if preview.verdict is not None and not preview.verdict.ok:  # before Add (issue 32)
        text = f"⚠ **Before you add it:** {html.escape(preview.verdict.message())}  \n" + text
    if preview.images:  # a features-only model: the test images its description lands among
        images = ", ".join(
            f"{html.escape(Path(item.image_id).name)} (*{html.escape(item.class_name)}*, {item.kind})"
            for item in preview.images
        )
        text += f"  \n**Nearest test images:** {images}."
    match = preview.image
    if match is None:
        return text + "  \nPredict an image first to see how the draft would compare on it."
    return text + (
        f"  \n**On your last image** its description would be **#{match.rank} of {match.candidates}** "
        f"nearest ({match.distance:.2f}; the nearest class there: *{html.escape(match.nearest)}*, "
        f"{match.nearest_distance:.2f})."
    )


def refusals_in_status(status_at: int, outputs: int) -> Callable[[F], F]:
    """Show a refused edit's reason in the tab's status line and leave every other output as it was.

    Raised as ``gr.Error``, the reason was a toast that fades while each output kept a bare "Error" pill.
    """

    def decorate(handler: F) -> F:
        @functools.wraps(handler)
        def wrapped(*args: Any) -> Any:
            try:
                return handler(*args)
            except ACMRError as error:
                log.warning("refused: %s", error)
                shown = [gr.skip()] * outputs
                shown[status_at] = f"⚠ {html.escape(str(error), quote=False)}"
                return tuple(shown)

        return wrapped  # type: ignore[return-value]

    return decorate


def examples_block() -> tuple[gr.Markdown, gr.Gallery]:
    """Where "Show examples" answers: a line and the drawn images with the model's answers, right under
    the tab's status line (the gallery shows once there is something in it)."""
    status = gr.Markdown(elem_id="examples-status")
    gallery = gr.Gallery(
        label="Drawn images of the class (never trained on) and the model's answer",
        columns=4,
        height="auto",
        object_fit="contain",
        allow_preview=False,
        visible=False,
        elem_id="class-examples",
    )
    return status, gallery


def wire_examples(
    button: gr.Button,
    status: gr.Markdown,
    gallery: gr.Gallery,
    chosen: gr.Dropdown,
    session: Session,
    service_for: ServiceFor,
) -> None:
    """The "Show examples" action: draw images of the chosen user class (demo world), show the answers."""

    def on_show(name: str | None, bundle_name: str, visitor: str | None) -> tuple:
        # A refusal is a message, the gallery hidden: raised, it left a bare "Error" pill in the gallery.
        if not name:
            return "Pick a class under *Your class* first (a class just added is picked).", gr.update(
                value=None, visible=False
            )
        service = service_for(bundle_name, visitor)
        try:
            examples = service.render_examples(name)
            warning = service.class_warning(name)
        except ACMRError as error:
            return f"Cannot show examples: {html.escape(str(error), quote=False)}", gr.update(
                value=None, visible=False
            )
        images = [(item.image, example_caption(item)) for item in examples]
        return examples_markdown(name, examples, warning), gr.update(value=images, visible=True)

    button.click(
        on_show, [chosen, *session.who], [status, gallery],
        concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict", api_visibility="private",
    )  # fmt: skip


def examples_markdown(name: str, examples: list[RenderedExample], warning: str = "") -> str:
    recognised = sum(item.recognised for item in examples)
    text = (
        f"**{html.escape(name)}**: {recognised} of {len(examples)} drawn images recognised as this class "
        "(all classes compete)."
    )
    # The warning the class was added with stays with it (issue 32).
    return text + (f"  \n⚠ {html.escape(warning, quote=False)}" if warning else "")


def example_caption(example: RenderedExample) -> str:
    top = example.prediction.ranked[0]
    mark = "✓" if example.recognised else "✗"
    return f"{mark} {top.name} ({top.kind}, {top.probability:.0%})"


def write_export(bundle_name: str, text: str) -> Path:
    """The export file, in a folder of its own in this process's scratch folder: visitors export at the same
    time, and a shared file name could hand one visitor's classes to another before Gradio copies it (the
    folder goes when the app stops; Gradio's cache cleaning removes its copies)."""
    folder = scratch_folder() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=folder)) / f"{bundle_name}-user-classes.json"
    path.write_text(text, encoding="utf-8")
    return path


def try_newest(service_for: ServiceFor, example_of_class: dict[str, str]) -> Callable[..., tuple]:
    """The handler that shows the Predict tab's "try it" row for the visitor's newest class, if any
    (``(bundle_name, visitor) -> (row, note, example path)``): a reload keeps the offer."""

    def on_load(bundle_name: str, visitor: str | None) -> tuple:
        service = service_for(bundle_name, visitor)
        names = service.user_class_names()
        if not names:
            return gr.update(visible=False), "", None
        note, path = try_markdown(service, names[-1], example_of_class)
        return gr.update(visible=True), note, path

    return on_load


def try_markdown(
    service: StudioService, name: str, example_of_class: dict[str, str]
) -> tuple[str, str | None]:
    """The Predict tab's note about a newly added class, and the example closest to it (if any)."""
    nearest = next((item.nearest for item in service.alignment() if item.name == name), "")
    path = example_of_class.get(nearest)
    note = (
        f"**The class “{html.escape(name)}” now takes part in every prediction.** Upload a photo of one"
        + (
            f", or try the example of the closest class the model has photos of (*{html.escape(nearest)}*)."
            if path
            else "."
        )
    )
    return note, path
