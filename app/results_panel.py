"""The *Results* tab: where a model trained on the benchmark features fails, per class.

For a bundle from ``acmr bundle --run`` (features-only, see docs/bundles.md): the test split's per-class
accuracy (U and S classes) and, for each class, what its images are mistaken for (the top confusions); the
table sorts by any column (click a header). Other bundles have no test results: the tab says so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from acmr_core.errors import ACMRError
from acmr_core.serving.service import StudioService
from app.widgets import ServiceFor, Session, user_errors

#: The class filter's choices: every class, or one kind.
SHOW = ("all", "unseen", "seen")
RESULTS_COLUMNS = ["class", "kind", "test images", "accuracy %", "mistaken for (share of its images)"]


@dataclass
class ResultsPanel:
    """The components of the *Results* tab."""

    tab: gr.Tab
    summary: gr.Markdown
    show: gr.Radio
    table: gr.Dataframe


def results_panel(default: StudioService) -> ResultsPanel:
    """Lay out the *Results* tab (call inside the Blocks)."""
    with gr.Tab("Results") as tab:
        summary = gr.Markdown(results_markdown(default), elem_id="results-summary")
        show = gr.Radio(list(SHOW), value="all", label="Classes", elem_id="results-show")
        table = gr.Dataframe(
            results_frame(default),
            label="Per class, worst first (click a header to sort): accuracy on its test images, and what "
            "the others were taken for",
            interactive=False,
            wrap=True,
            elem_id="results-table",
        )
    return ResultsPanel(tab, summary, show, table)


def wire_results(panel: ResultsPanel, session: Session, service_for: ServiceFor) -> None:
    """Show the session's model's results when the tab opens, and filter them by kind."""

    @user_errors
    def on_show(show: str, bundle_name: str, visitor: str | None) -> tuple:
        service = service_for(bundle_name, visitor)
        return results_markdown(service), results_frame(service, show)

    gr.on(
        [panel.tab.select, panel.show.change],
        on_show,
        [panel.show, *session.who],
        [panel.summary, panel.table],
        api_visibility="private",
    )


def results_frame(service: StudioService, show: str = "all") -> pd.DataFrame:
    """One row per test class (of the kind ``show``), lowest accuracy first; empty without results."""
    try:
        classes = service.results()["classes"]
    except ACMRError:
        return pd.DataFrame([], columns=RESULTS_COLUMNS)
    rows = [
        [
            row["name"],
            row["kind"],
            row["images"],
            round(row["accuracy"], 1),
            ", ".join(f"{item['name']} ({item['kind']}, {item['share']:.0f} %)" for item in row["confusions"])
            or "–",
        ]
        for row in sorted(classes, key=lambda row: (row["accuracy"], row["name"]))
        if show == "all" or row["kind"] == show
    ]
    return pd.DataFrame(rows, columns=RESULTS_COLUMNS)


def results_markdown(service: StudioService) -> str:
    """The test split's U / S / H (as ``metrics.json`` has them) and the seen-class bias in plain words."""
    try:
        results = service.results()
    except ACMRError as error:
        return f"*{html.escape(str(error), quote=False)}.*"
    metrics = results["metrics"]
    kinds = [row["kind"] for row in results["classes"]]
    dataset = html.escape(str(results.get("dataset", "")))
    return (
        f"### Test split{f' of {dataset}' if dataset else ''}: U {metrics['U']:.2f} · S {metrics['S']:.2f} · "
        f"H {metrics['H']:.2f}\n"
        f"Mean per-class accuracy over {kinds.count('unseen')} unseen (U) and {kinds.count('seen')} seen (S) "
        f"classes, every class competing (γ = {results.get('gamma', service.default_gamma):g}; seed "
        f"{results.get('seed', '–')}, the figures of its `metrics.json`). "
        f"**{metrics.get('unseen_as_seen', 0.0):.0f} %** of unseen-class images were taken for a seen class, "
        f"**{metrics.get('seen_as_unseen', 0.0):.0f} %** of seen-class images for an unseen one."
    )
