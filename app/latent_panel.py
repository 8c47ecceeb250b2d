"""The *Latent space* tab: photos and class descriptions in the shared space, filtered and highlighted, and
how well they line up (per class and overall)."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from acmr_core.serving.service import StudioService
from acmr_core.viz.plots import KINDS, QueryPoint
from app.tables import alignment_frame
from app.widgets import ServiceFor, Session, user_errors


@dataclass
class LatentPanel:
    """The components of the *Latent space* tab."""

    tab: gr.Tab
    class_filter: gr.Dropdown
    highlight: gr.Dropdown
    kind_filter: gr.CheckboxGroup
    plot: gr.Plot
    alignment_note: gr.Markdown
    alignment: gr.Dataframe

    @property
    def filters(self) -> list[Any]:
        """The plot's filter inputs, in the order of :func:`on_filter`'s first three parameters."""
        return [self.class_filter, self.kind_filter, self.highlight]


def latent_panel(default: StudioService) -> LatentPanel:
    """Lay out the *Latent space* tab (call inside the Blocks)."""
    with gr.Tab("Latent space") as tab:
        with gr.Row():
            class_filter = gr.Dropdown(
                default.class_names(), multiselect=True, label="Only these classes (empty: all)",
                scale=2, min_width=200,
            )  # fmt: skip
            highlight = gr.Dropdown(
                default.class_names(), value=None, label="Highlight a class", scale=2,
                min_width=200, elem_id="highlight-class",
            )  # fmt: skip
            kind_filter = gr.CheckboxGroup(
                list(KINDS), value=list(KINDS), label="Show", scale=1, min_width=200
            )
        alignment_note = gr.Markdown(alignment_markdown(default), elem_id="alignment-summary")
        # The whole width: the map needs room more than anything beside it.
        plot = gr.Plot(label="Photos (●) round their class's description (◆)", elem_id="latent-plot")
        alignment = gr.Dataframe(
            alignment_frame(default),
            label="Per class (click a header to sort): are the class's own photos the nearest to its "
            "description? dist. = distance from the description's point to the centre of its photos",
            interactive=False,
            wrap=True,
            column_widths=["22%", "17%", "19%", "15%", "27%"],
            elem_id="alignment-table",
        )
    return LatentPanel(tab, class_filter, highlight, kind_filter, plot, alignment_note, alignment)


def filtered_figure(service_for: ServiceFor) -> Callable[..., Any]:
    """The handler that draws the latent tab's plot from its filters, the last query and whose it is:
    ``(classes, kinds, focus, query, bundle_name, visitor) -> figure`` (inputs: ``filters`` + the query +
    ``session.who``)."""

    def on_filter(
        classes: list[str],
        kinds: list[str],
        focus: str | None,
        query: QueryPoint | None,
        bundle_name: str,
        visitor: str | None,
    ) -> Any:
        service = service_for(bundle_name, visitor)
        return service.latent_figure(classes=classes, kinds=kinds, query=query, highlight=focus)

    return on_filter


def wire_latent(
    panel: LatentPanel, session: Session, service_for: ServiceFor, ready: Any, predicted: Any
) -> None:
    """Redraw the plot when a filter changes, once the page knows its visitor (``ready``), and after each
    prediction (its image shown)."""
    on_filter = user_errors(filtered_figure(service_for))

    # The latent tab highlights the last uploaded image too.
    filter_inputs = [*panel.filters, session.last_query, *session.who]
    predicted.success(on_filter, filter_inputs, panel.plot, api_visibility="private")
    ready.then(on_filter, filter_inputs, panel.plot, api_visibility="private")
    # The visitor's edits only (input, not change): the class lists' choices are refreshed each time the tab
    # opens (ClassViews), and as change events those redrew the whole map again (1.3 s for 13 800 photos).
    gr.on(
        [panel.class_filter.input, panel.kind_filter.input, panel.highlight.input],
        on_filter,
        inputs=filter_inputs,
        outputs=panel.plot,
        api_visibility="private",
    )


def alignment_markdown(service: StudioService) -> str:
    """The overall alignment figure with its meaning in plain words, and how to read the map."""
    summary = service.alignment_summary()
    figure = f"{summary.fraction:.0%}" if summary.classes_with_images else "–"
    return (
        f"### Alignment: {figure}\n{html.escape(summary.sentence(), quote=False)}\n\n"
        "**Reading the map.** Each diamond is a class's description, each dot a photo. A class's photos "
        "ring its description in a tinted patch of its colour when the two agree; a description that "
        "lies away from its photos is joined to them by a line. Classes are placed so that similar ones "
        "are near (the axes mean nothing, and the patches are spread so none hides another). "
        "Filled = learned from photos (seen), open ◇ ○ = known only from a description (unseen), "
        f"★ = {'added by a user' if service.shares_classes else 'yours'}, ✕ = your image. Hover a point for "
        "its class; pick one in *Highlight a class*."
    )
