"""How well the reader reads descriptions: the measure behind tests/test_describe.py and
benchmarks/bench_describe.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from acmr_core.data.classes import attribute_group
from acmr_core.describe.reader import read_description, split_name
from acmr_core.errors import UserClassError


@dataclass(frozen=True)
class DescriptionScore:
    """Mentioned attribute groups read exactly right, and unmentioned groups where anything was set."""

    descriptions: int
    mentioned: int
    right: int
    unmentioned: int
    wrongly_set: int

    @property
    def right_share(self) -> float:
        return self.right / self.mentioned if self.mentioned else 1.0

    @property
    def wrongly_set_share(self) -> float:
        return self.wrongly_set / self.unmentioned if self.unmentioned else 0.0


def score_descriptions(
    cases: Sequence[Mapping[str, Any]], attribute_names: Sequence[str]
) -> DescriptionScore:
    """Score ``cases`` (``{"text", "groups": {group: [values meant]}}``, values as written after the group).

    A mentioned group is right only when the attributes set (≥ 0.5) in it are exactly the intended ones.
    """
    groups = sorted({attribute_group(name) for name in attribute_names})
    right = mentioned = wrong = unmentioned = 0
    for case in cases:
        try:
            values = read_description(case["text"], attribute_names).values
        except UserClassError:
            values = {}
        for group in groups:
            in_group = [name for name in attribute_names if attribute_group(name) == group]
            got = {name for name in in_group if values.get(name, 0.0) >= 0.5}
            meant = case["groups"].get(group)
            if meant:
                wanted = {name for name in in_group if split_name(name)[1] in meant}
                mentioned, right = mentioned + 1, right + (got == wanted)
            else:
                unmentioned, wrong = unmentioned + 1, wrong + bool(got)
    return DescriptionScore(len(cases), mentioned, right, unmentioned, wrong)
