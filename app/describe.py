"""Describe a class in words or with example images (issue 15): fills the editor of *Define a class*.

Two pieces, hooked into :mod:`app.define_panel` with a few lines:

* :func:`describe_panel` builds the "Describe it" text box and the "From example images" upload (plus an
  example gallery to pick from) inside the *Define a class* tab; :meth:`DescribePanel.wire` connects them to
  the existing attribute editor and "attributes that apply" list once those exist. Both paths only fill the
  editor: the class is added by the existing *Add class*, with its usual validation.
* the API side, ``/attributes_from_text`` and ``/attributes_from_images`` for ``gradio_client``, is declared
  with the other endpoints in :mod:`app.api`.

Problems (nothing recognised, a text too long, bad images) are shown in the panel's own status line; the
editor keeps what it had. Every name and message is HTML-escaped before it is shown.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from acmr_core.describe.images import MAX_EXAMPLE_IMAGES, ImageReadings
from acmr_core.describe.reader import Reading
from acmr_core.errors import ACMRError
from acmr_core.serving.service import StudioService
from app.tables import applying, attribute_frame, image_readings_table
from app.widgets import IMAGE_READING_CONCURRENCY, IMAGE_READING_ID, uploaded_paths

NEXT_STEP = "Check the table (edit any value), name the class, then press **Add class**."


@dataclass
class DescribePanel:
    """The components of the describe panel (built in the layout; wired once the editor exists)."""

    text: gr.Textbox
    text_button: gr.Button
    images: gr.File
    gallery: gr.Gallery | None
    images_button: gr.Button
    status: gr.Markdown
    readings: gr.Dataframe
    examples: list[str]

    def wire(
        self,
        service_for: Callable[[str], StudioService],
        bundle: gr.State,
        editor: gr.Dataframe,
        toggles: gr.Dropdown,
    ) -> None:
        """Connect the panel to the attribute editor and the "attributes that apply" list."""

        def on_text(text: str, bundle_name: str) -> tuple:
            try:
                reading = service_for(bundle_name).attributes_from_text(text or "")
            except ACMRError as error:
                return gr.update(), gr.update(), _problem(error), gr.update(visible=False)
            service = service_for(bundle_name)
            return (
                attribute_frame(service, reading.values),
                applying(reading.values),
                text_markdown(reading),
                gr.update(visible=False),
            )

        outputs = [editor, toggles, self.status, self.readings]
        gr.on(
            [self.text_button.click, self.text.submit],
            on_text,
            [self.text, bundle],
            outputs,
            api_visibility="private",
        )

        def on_images(files: Any, bundle_name: str) -> tuple:
            try:
                readings = service_for(bundle_name).attributes_from_images(uploaded_paths(files))
            except ACMRError as error:
                return gr.update(), gr.update(), _problem(error), gr.update(visible=False)
            values = readings.average
            header, rows = image_readings_table(readings)
            return (
                attribute_frame(service_for(bundle_name), values),
                applying(values),
                images_markdown(readings),
                gr.update(value=pd.DataFrame(rows, columns=_unique(header)), visible=True),
            )

        self.images_button.click(
            on_images,
            [self.images, bundle],
            outputs,
            concurrency_limit=IMAGE_READING_CONCURRENCY,  # 1-10 backbone forwards: own group, see there
            concurrency_id=IMAGE_READING_ID,
            api_visibility="private",
            preprocess=False,  # the raw uploads (see uploaded_paths)
        )

        # Another bundle has other attributes: what was read for the previous one no longer applies.
        bundle.change(
            lambda _: ("", gr.update(value=None, visible=False)),
            [bundle],
            [self.status, self.readings],
            api_visibility="private",
        )

        if self.gallery is not None:
            examples = self.examples

            def on_pick(files: Any, event: gr.SelectData) -> Any:
                chosen = uploaded_paths(files)
                if len(chosen) >= MAX_EXAMPLE_IMAGES:
                    return gr.update()
                return [*chosen, examples[event.index]]

            self.gallery.select(
                on_pick, [self.images], [self.images], api_visibility="private", preprocess=False
            )


def describe_panel(examples: Sequence[str]) -> DescribePanel:
    """The "Describe it" box and the example-image upload; call inside the *Define a class* column."""
    with gr.Accordion("Describe it: fill the attributes from words or from example images", open=True):
        with gr.Row():
            text = gr.Textbox(
                label="Describe it",
                placeholder="e.g. three small violet triangles with stripes on a dark background",
                lines=2,
                scale=4,
                elem_id="describe-text",
            )
            text_button = gr.Button("Fill from words", scale=1, elem_id="describe-button")
        with gr.Row():
            images = gr.File(
                label=f"Your example images (1–{MAX_EXAMPLE_IMAGES})",
                file_count="multiple",
                type="filepath",
                height=140,
                scale=3,
                elem_id="describe-images",
            )
            gallery = (
                gr.Gallery(
                    list(examples),
                    label="…or click some to add them",
                    columns=8,
                    height=140,
                    allow_preview=False,
                    scale=3,
                    elem_id="describe-gallery",
                )
                if examples
                else None
            )
            images_button = gr.Button("Fill from images", scale=1, elem_id="describe-images-button")
        status = gr.Markdown(elem_id="describe-status")
        readings = gr.Dataframe(
            label="What the model reads in each image (strongest first; spread: where the images disagree)",
            interactive=False,
            visible=False,
            max_height=300,
            elem_id="image-readings",
        )
    return DescribePanel(text, text_button, images, gallery, images_button, status, readings, list(examples))


# ---- messages ----------------------------------------------------------------------------------------------


def text_markdown(reading: Reading) -> str:
    """What a description set, phrase by phrase, and the words that were not used."""
    lines = [
        f"- “{html.escape(match.words)}” → "
        + ", ".join(f"`{html.escape(name)}`" for name in match.attributes)
        + (f" ({match.value:g})" if match.value < 1 else "")
        for match in reading.matches
    ]
    unused = (
        f"\n\nNot used: {html.escape(', '.join(reading.unknown_words))}." if reading.unknown_words else ""
    )
    return (
        f"**Recognised {len(reading.values)} attribute(s)** (only these are set):\n\n"
        + "\n".join(lines)
        + unused
        + f"\n\n{NEXT_STEP}"
    )


def images_markdown(readings: ImageReadings) -> str:
    """How many images were read, which were refused and why."""
    read = len(readings.labels)
    refused = "".join(
        f"\n- refused **{html.escape(name)}**: {html.escape(reason, quote=False)}"
        for name, reason in readings.refused
    )
    return (
        f"**Read {read} image(s)**: the editor holds the average of what the model reads in them "
        f"(the table below shows each image).{refused}\n\n{NEXT_STEP}"
    )


def _problem(error: Exception) -> str:
    return f"⚠️ {html.escape(str(error), quote=False)} The attribute table was left as it was."


def _unique(header: list[str]) -> list[str]:
    """Column names made unique (two uploads may have the same file name)."""
    seen: dict[str, int] = {}
    unique = []
    for name in header:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique
