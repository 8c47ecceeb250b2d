"""What an image reads beside what a class has, one row per attribute group ("what the model sees").

Listing the strongest decoded attributes on their own can look like it contradicts the answer: an image
predicted "large blue dotted square" may read ``shape: triangle 0.79`` and ``shape: square 0.37``. Grouped
names (``"shape: square"``, CUB's ``"has_bill::hooked"``) are compared group by group instead: the image's
strongest value in the group beside the class's, agreeing when they are the same value. Ungrouped names
(AWA2's ``"stripes"``) have no alternatives to compare, so the strongest decoded ones are listed, each
agreeing when the class has it. Pure: no model, no widgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from acmr_core.data.classes import split_attribute_name
from acmr_core.serving.results import Prediction

#: A class "has" an ungrouped attribute from this value on (the editor's "applies" threshold).
HAS_ATTRIBUTE = 0.5
#: How many of the strongest decoded ungrouped attributes are listed.
STRONGEST_UNGROUPED = 8


@dataclass(frozen=True)
class GroupReading:
    """One row: an attribute group (or one ungrouped attribute), what the image reads and what a class has.

    For a group, ``read`` and ``has`` are values of the group (``"square"``); ``has`` is ``""`` when the class
    sets nothing in the group (all 0). For an ungrouped attribute ``group`` is ``""`` and both are its name.
    """

    group: str
    read: str
    read_score: float  # the image's decoded value of ``read``, in [0, 1]
    has: str
    has_score: float  # the class's value of ``has``, in [0, 1]
    agree: bool


def group_readings(
    decoded: Mapping[str, float],
    class_attributes: Mapping[str, float],
    count: int = STRONGEST_UNGROUPED,
) -> list[GroupReading]:
    """Per-group rows comparing an image's decoded attributes with a class's (both attribute -> [0, 1]).

    Grouped rows come first, in the order their group first appears among the attribute names, all of them
    (disagreements included); then the ``count`` strongest decoded ungrouped attributes, strongest first.
    """
    groups: dict[str, list[tuple[str, str]]] = {}  # group -> (attribute name, value), attribute order
    ungrouped: list[str] = []
    for name in decoded:
        group, value = split_attribute_name(name)
        if group:
            groups.setdefault(group, []).append((name, value))
        else:
            ungrouped.append(name)
    rows = [_group_row(group, members, decoded, class_attributes) for group, members in groups.items()]
    # Stable sort: equal readings keep attribute order, so the table does not shuffle between runs.
    strongest = sorted(ungrouped, key=lambda name: -decoded[name])[:count]
    for name in strongest:
        has_score = float(class_attributes.get(name, 0.0))
        rows.append(GroupReading("", name, float(decoded[name]), name, has_score, has_score >= HAS_ATTRIBUTE))
    return rows


def _group_row(
    group: str,
    members: Sequence[tuple[str, str]],
    decoded: Mapping[str, float],
    class_attributes: Mapping[str, float],
) -> GroupReading:
    # max() keeps the first of equal values: ties go to the earlier attribute, deterministically.
    read_name, read_value = max(members, key=lambda member: decoded[member[0]])
    has_name, has_value = max(members, key=lambda member: class_attributes.get(member[0], 0.0))
    has_score = float(class_attributes.get(has_name, 0.0))
    # A class that sets nothing in the group has no value there to agree with.
    has = has_value if has_score > 0.0 else ""
    return GroupReading(
        group, read_value, float(decoded[read_name]), has, has_score, bool(has) and read_name == has_name
    )


def prediction_readings(prediction: Prediction, count: int = STRONGEST_UNGROUPED) -> list[GroupReading]:
    """:func:`group_readings` of an image's prediction against its predicted (top) class."""
    return group_readings(prediction.decoded, prediction.predicted_attributes, count)


def agreeing_groups(readings: Sequence[GroupReading]) -> int:
    """How many of the rows agree."""
    return sum(reading.agree for reading in readings)


def all_agree(readings: Sequence[GroupReading]) -> bool:
    """Every row agrees (and there is at least one)."""
    return bool(readings) and agreeing_groups(readings) == len(readings)
