"""The tables and header lines the app's widgets show, built from the plain data the service returns.

The service answers with names, values in [0, 1] and records; how they look in a ``gr.Dataframe`` or a
``gr.Markdown`` (columns, rounding, wording, HTML escaping) is decided here, next to the widgets.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pandas as pd

from acmr_core.data.classes import attribute_group
from acmr_core.describe.images import ImageReadings
from acmr_core.errors import UserClassError, quote_value
from acmr_core.serving.readings import STRONGEST_UNGROUPED, GroupReading, prediction_readings
from acmr_core.serving.results import Prediction
from acmr_core.serving.service import StudioService

SEES_COLUMNS = ["group", "the image reads", "the predicted class has", "agree"]
AGREE_MARKS = {True: "✓", False: "✗"}
#: An attribute counts as "applies" (ticked in the list) from this value on, everywhere in the editor.
APPLIES = 0.5


# ---- the attribute editor of *Define a class* ------------------------------------------------------------


def attribute_frame(service: StudioService, values: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The attribute editor's table: group, attribute, value in [0, 1]."""
    values = values or {}
    return pd.DataFrame(
        {
            "group": service.attribute_groups,
            "attribute": service.attribute_names,
            "value": [round(float(values.get(name, 0.0)), 3) for name in service.attribute_names],
        }
    )


def frame_to_attributes(frame: pd.DataFrame | None) -> dict[str, float]:
    """Read the editor's table back; a cell that is not a number is refused, naming its attribute."""
    if frame is None or len(frame) == 0:
        raise UserClassError("the attribute table is empty; set at least one attribute above 0")
    attributes: dict[str, float] = {}
    for name, raw in zip(frame["attribute"], frame["value"], strict=True):
        try:
            value = float(raw) if str(raw).strip() else 0.0
        except (TypeError, ValueError):
            raise UserClassError(
                f"attribute {quote_value(name)} has value {quote_value(raw)}; use a number between 0 and 1"
            ) from None
        attributes[str(name)] = value
    return attributes


def apply_toggles(
    service: StudioService, frame: pd.DataFrame | None, selected: Collection[str]
) -> pd.DataFrame:
    """The table after the "attributes that apply" list changed; an attribute counts as on at ≥ 0.5.

    A newly selected attribute becomes 1 (one already on keeps its value); one no longer selected but
    still on becomes 0; partial values below 0.5 typed into the table are left alone.
    """
    current: dict[str, float] = {}
    if frame is not None and len(frame):
        for name, raw in zip(frame["attribute"], frame["value"], strict=True):
            try:
                current[str(name)] = float(raw)
            except (TypeError, ValueError):
                current[str(name)] = 0.0
    chosen = set(selected)
    values = {}
    for name in service.attribute_names:
        value = current.get(name, 0.0)
        if name in chosen:
            values[name] = value if value >= APPLIES else 1.0
        else:
            values[name] = 0.0 if value >= APPLIES else value
    return attribute_frame(service, values)


def applying(values: Mapping[str, float]) -> list[str]:
    """The attributes ticked in the "attributes that apply" list for these values."""
    return [name for name, value in values.items() if value >= APPLIES]


# ---- what the model sees in an image (*Predict*) ---------------------------------------------------------


def image_readings_table(
    readings: ImageReadings, count: int | None = None
) -> tuple[list[str], list[list[object]]]:
    """(header, rows) of "what the model reads in each image": the ``count`` strongest average attributes
    (all by default), each with its average, spread and every image's reading, rounded to 2 places."""
    mean, spread = readings.mean, readings.spread
    header = ["attribute", "average", "spread", *readings.labels]
    rows = [
        [
            readings.attribute_names[index],
            round(float(mean[index]), 2),
            round(float(spread[index]), 2),
            *(round(float(value), 2) for value in readings.values[:, index]),
        ]
        for index in readings.order()[: count or len(mean)]
    ]
    return header, rows


def sees_frame(prediction: Prediction, count: int = STRONGEST_UNGROUPED) -> pd.DataFrame:
    """One row per attribute group: what the image reads beside what the predicted class has, ✓ / ✗.

    Ungrouped attribute names (no "group: value") give the ``count`` strongest decoded attributes instead.
    """
    rows = [_sees_row(reading) for reading in prediction_readings(prediction, count)]
    return pd.DataFrame(rows, columns=SEES_COLUMNS)


def _sees_row(reading: GroupReading) -> list[str]:
    if not reading.group:  # an ungrouped attribute (its name in the first column): does the class have it?
        has = f"{'yes' if reading.agree else 'no'} {reading.has_score:.2f}"
        return [reading.read, f"{reading.read_score:.2f}", has, AGREE_MARKS[reading.agree]]
    has = f"{reading.has} {reading.has_score:.2f}" if reading.has else "(nothing set)"
    return [reading.group, f"{reading.read} {reading.read_score:.2f}", has, AGREE_MARKS[reading.agree]]


# ---- class lists -------------------------------------------------------------------------------------------


def user_class_frame(service: StudioService) -> pd.DataFrame:
    """The user classes with what describes them: the strongest attribute of every group (all of them,
    in the model's group order), or the strongest few attributes where names have no groups; and the warning
    each was added with (issue 32)."""
    groups = [attribute_group(name) for name in service.attribute_names]
    rows = []
    for item in service.user_classes():
        described = ", ".join(_describing(service.attribute_names, groups, item.values))
        rows.append([item.name, described, warning_cell(service.class_warning_record(item.name))])
    return pd.DataFrame(rows, columns=["name", "attributes (strongest per group)", "warning"])


def _describing(names: Sequence[str], groups: Sequence[str], values: Sequence[float]) -> list[str]:
    """Per group, its strongest attribute that is set (its value when partial); ungrouped names: the
    STRONGEST_UNGROUPED strongest."""
    best: dict[str, tuple[float, str]] = {}
    ungrouped = []
    for name, group, value in zip(names, groups, values, strict=True):
        if value <= 0:
            continue
        if not group:
            ungrouped.append((value, name))
        elif group not in best or value > best[group][0]:
            best[group] = (value, name)
    ordered = [best[group] for group in dict.fromkeys(groups) if group in best]
    ordered += sorted(ungrouped, key=lambda pair: -pair[0])[:STRONGEST_UNGROUPED]
    return [name if value >= 1 else f"{name} {value:.2g}" for value, name in ordered]


def warning_cell(record: dict[str, Any] | None) -> str:
    """A user class's warning in one short cell: whom the model cannot tell it apart from."""
    if not record:
        return ""
    return "⚠ not told apart from " + ", ".join(record["confused_with"])


def alignment_frame(service: StudioService) -> pd.DataFrame:
    """Per-class alignment table (user classes have no images: only their nearest images are given)."""
    aligned = service.alignment()
    return pd.DataFrame(
        {
            "class": [item.name for item in aligned],
            "kind": [item.kind for item in aligned],
            "own images nearest": [
                ("yes" if item.own_is_nearest else f"no (rank {item.own_rank})")
                if item.own_rank
                else "(no images)"
                for item in aligned
            ],
            # A class without images (a user class) has no distance: "–" keeps the column tidy.
            "dist.": [round(item.distance, 2) if item.own_rank else "–" for item in aligned],
            "nearest images": [item.nearest for item in aligned],
        }
    )


# ---- the page header ---------------------------------------------------------------------------------------


def summary_markdown(service: StudioService) -> str:
    """One plain-words line for the page header: what the model can name (names escaped)."""
    counts = service.class_counts()
    owner = "added here" if service.shares_classes else "of yours"
    yours = f", plus **{counts['user']}** {owner}" if counts["user"] else ""
    total = counts["seen"] + counts["unseen"]
    return (
        f"Model **{html.escape(service.bundle_name)}** names **{total}** classes: {counts['seen']} learned "
        f"from photos and {counts['unseen']} known only from a description{yours}."
    )


def describe_markdown(service: StudioService) -> str:
    """A short description of the bundle for the app's header (names escaped)."""
    counts = service.class_counts()
    notes = service.caveat  # e.g. the demo's "random backbone reads shapes poorly"
    return (
        f"**{html.escape(service.bundle_name)}** — {counts['seen']} seen, {counts['unseen']} unseen and "
        f"{counts['user']} user-defined classes over {len(service.attribute_names)} attributes; backbone "
        f"{html.escape(service.backbone_description)}; default γ = {service.default_gamma:g}."
        + (f"  \n{html.escape(notes, quote=False)}" if notes else "")
    )
