"""The Gradio Blocks of the ACMR zero-shot studio: a thin layer over :mod:`acmr_core.serving.service`.

Four tabs (:mod:`app.predict_panel`, :mod:`app.define_panel`, :mod:`app.latent_panel`,
:mod:`app.results_panel`) under a header that picks the model, plus the API endpoints for ``gradio_client``
(:mod:`app.api`; see docs/app.md). This module lays them out and connects what spans the tabs: the class
lists, the two plots and the model switch.
Every handler turns an :class:`~acmr_core.errors.ACMRError` into a visible ``gr.Error``; the message is
HTML-escaped because Gradio renders error text as HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from acmr_core.serving.registry import ServiceRegistry
from acmr_core.serving.service import StudioService
from app.api import build_api
from app.define_panel import DefinePanel, define_panel, try_newest, wire_define
from app.examples import captioned_examples, example_entries, example_gallery
from app.latent_panel import LatentPanel, alignment_markdown, filtered_figure, latent_panel, wire_latent
from app.layout import ABOUT, HEADER
from app.paths import DELETE_CACHE, EXAMPLES_DIR
from app.predict_panel import PredictPanel, gamma_range, predict_panel, wire_predict
from app.results_panel import results_panel, wire_results
from app.tables import alignment_frame, attribute_frame, describe_markdown, summary_markdown, user_class_frame
from app.test_picker import picker_for
from app.widgets import ServiceFor, Session, ensure_visitor, user_errors, visitor_state


def build_app(registry: ServiceRegistry, examples_dir: Path = EXAMPLES_DIR) -> gr.Blocks:
    """The whole app; ``registry`` holds the loaded bundle(s) and opens others on demand."""
    default = registry.default()
    example_of_class = {entry["class"]: entry["path"] for entry in example_entries(examples_dir)}

    def service_for(bundle: str, visitor: str | None = None) -> StudioService:
        return registry.get(bundle or registry.default_name).for_visitor(visitor)

    with gr.Blocks(title="ACMR zero-shot studio", delete_cache=DELETE_CACHE) as demo:
        session = Session(
            bundle=gr.State(registry.default_name),
            visitor=visitor_state(),
            last_query=gr.State(None),
            last_latent=gr.State(None),
            try_path=gr.State(None),
        )
        header = header_block(registry, default)
        # "wrap": on a phone the tabs take a second line rather than hiding behind a "⋯" menu.
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):
            predict = predict_panel(default, captioned_examples(examples_dir))
            define = define_panel(default, example_gallery(examples_dir), session, service_for)
            latent = latent_panel(default)
            results = results_panel(default)

        predicted = wire_predict(predict, session, service_for)
        # Everything the page shows of the visitor's classes waits for the page to know its visitor.
        ready = demo.load(ensure_visitor, session.visitor, session.visitor, api_visibility="private")
        views = ClassViews(header, define, latent)
        views.follow_the_store(ready, session, service_for)
        wire_define(
            define, predict, session, service_for, views.values, views.outputs,
            refresh_plots(predict, latent, session, service_for), example_of_class,
        )  # fmt: skip
        ready.then(
            lambda name, visitor: service_for(name, visitor).latent_figure(), session.who, predict.plot,
            api_visibility="private",
        )  # fmt: skip
        # After a reload, the Predict tab still offers to try the visitor's newest class.
        ready.then(
            try_newest(service_for, example_of_class), session.who,
            [predict.try_row, predict.try_note, session.try_path], api_visibility="private",
        )  # fmt: skip
        wire_latent(latent, session, service_for, ready, predicted)
        wire_bundle_switch(header, predict, define, latent, views, session, service_for)
        wire_results(results, session, service_for)
        build_api(default)
    return demo


@dataclass
class Header:
    """The model choice and the two lines that describe the chosen model."""

    bundle_choice: gr.Dropdown
    summary: gr.Markdown
    info: gr.Markdown


def header_block(registry: ServiceRegistry, default: StudioService) -> Header:
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
            summary = gr.Markdown(summary_markdown(default), elem_id="bundle-summary")
    with gr.Accordion("About this model and how it works", open=False):
        gr.Markdown(ABOUT)
        info = gr.Markdown(describe_markdown(default))
    return Header(bundle_choice, summary, info)


@dataclass
class ClassViews:
    """Every view of the class list, across the tabs and the header."""

    header: Header
    define: DefinePanel
    latent: LatentPanel

    @property
    def outputs(self) -> list[Any]:
        define, latent = self.define, self.latent
        return [
            define.your_classes, define.chosen, define.start_from, latent.class_filter, latent.highlight,
            latent.alignment, latent.alignment_note, self.header.info, self.header.summary,
        ]  # fmt: skip

    @staticmethod
    def values(service: StudioService, keep: str | None = None) -> tuple:
        """The views from the service's current classes (``keep``: a chosen class that should stay chosen
        if it still exists)."""
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

    def follow_the_store(self, ready: Any, session: Session, service_for: ServiceFor) -> None:
        """The page (once it knows its visitor: ``ready``), and each tab when opened, shows the visitor's
        classes as they are now: after a reload, a restart, or an edit made in another tab."""

        def on_show(chosen_name: str | None, bundle_name: str, visitor: str | None) -> tuple:
            return self.values(service_for(bundle_name, visitor), keep=chosen_name)

        inputs = [self.define.chosen, *session.who]
        ready.then(on_show, inputs, self.outputs, api_visibility="private")
        gr.on(
            [self.define.tab.select, self.latent.tab.select],
            on_show,
            inputs,
            self.outputs,
            api_visibility="private",
        )


def refresh_plots(
    predict: PredictPanel, latent: LatentPanel, session: Session, service_for: ServiceFor
) -> dict[str, Any]:
    """The event (as ``.success`` keyword arguments) that redraws both plots after a change to the classes."""

    latent_plot = filtered_figure(service_for)

    def on_refresh(*inputs: Any) -> tuple:  # the latent tab's inputs: filters, query, bundle, visitor
        query, bundle_name, visitor = inputs[-3:]
        return latent_plot(*inputs), service_for(bundle_name, visitor).latent_figure(query=query)

    return {
        "fn": on_refresh,
        "inputs": [*latent.filters, session.last_query, *session.who],
        "outputs": [latent.plot, predict.plot],
        "api_visibility": "private",
    }


def wire_bundle_switch(
    header: Header,
    predict: PredictPanel,
    define: DefinePanel,
    latent: LatentPanel,
    views: ClassViews,
    session: Session,
    service_for: ServiceFor,
) -> None:
    """Choosing another model re-draws every view for it (or, if it cannot be opened, keeps the last one)."""

    @user_errors
    def on_bundle(name: str, visitor: str | None) -> tuple:
        service = service_for(name, visitor)
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
            None,
            *views.values(service),
            service.latent_figure(),
        )

    switch = header.bundle_choice.input(
        on_bundle,
        [header.bundle_choice, session.visitor],
        [session.bundle, predict.gamma, define.editor, define.toggles, session.last_query,
         session.last_latent, *views.outputs, latent.plot],
        api_visibility="private",
    )  # fmt: skip
    if predict.picker is not None:  # "pick a test image" only for a model that reads no images
        picker = predict.picker
        switch.success(
            lambda name, visitor: picker_for(service_for(name, visitor)), session.who,
            [picker.row, picker.class_choice, picker.image_choice], api_visibility="private",
        )  # fmt: skip
    # A bundle that cannot be opened leaves the session on the previous one: show that one again.
    switch.failure(
        lambda current: current, [session.bundle], [header.bundle_choice], api_visibility="private"
    )
