"""What any set of classes knows about itself, written once for the demo world and the bundle's catalog alike:
the attribute-name rule (``"group: value"``) and the properties that follow from names and seen flags.

It lives in ``data`` (below ``bundle``) so that :class:`acmr_core.data.demo_world.DemoWorld` and
:class:`acmr_core.bundle.catalog.ClassCatalog` share it with the dependency pointing down.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: How the demo world (and a hand-written class-metadata file) joins a group and a value: ``"colour: red"``.
ATTRIBUTE_SEPARATOR = ": "
#: Every separator a grouped attribute name may use: the demo world's, and CUB's ``"has_bill::hooked"``.
GROUP_SEPARATORS = (ATTRIBUTE_SEPARATOR, "::")
#: A class's kind is whether training saw images of it.
SEEN, UNSEEN = "seen", "unseen"


def attribute_name(group: str, value: str) -> str:
    """The grouped attribute name: ``("colour", "red") -> "colour: red"``."""
    return f"{group}{ATTRIBUTE_SEPARATOR}{value}"


def split_attribute_name(name: str) -> tuple[str, str]:
    """``(group, value)`` of an attribute name (``"has_bill::hooked" -> ("has_bill", "hooked")``);
    ``("", name)`` for an ungrouped one."""
    for separator in GROUP_SEPARATORS:
        if separator in name:
            group, value = name.split(separator, 1)
            return group.strip(), value
    return "", name


def attribute_group(name: str) -> str:
    """The group of an attribute name: ``"colour: red" -> "colour"``, ``"has_bill::hooked" -> "has_bill"``."""
    return split_attribute_name(name)[0]


class ClassTable:
    """The properties that follow from a set of classes' ``names``, ``seen_mask`` and ``attribute_names``.

    A mixin: the class using it provides those three (as fields or properties), so the demo world and the
    catalog compute seen / unseen indices, kinds and attribute groups the same way.
    """

    names: Sequence[str]
    seen_mask: np.ndarray
    attribute_names: Sequence[str]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def seen_classes(self) -> np.ndarray:
        return np.flatnonzero(self.seen_mask)

    @property
    def unseen_classes(self) -> np.ndarray:
        return np.flatnonzero(~np.asarray(self.seen_mask, dtype=bool))

    @property
    def kinds(self) -> tuple[str, ...]:
        """``"seen"`` or ``"unseen"`` per class, in class order."""
        return tuple(SEEN if seen else UNSEEN for seen in self.seen_mask)

    def attribute_groups(self) -> dict[str, list[str]]:
        """Attribute names by group, in attribute order (ungrouped names under ``""``)."""
        groups: dict[str, list[str]] = {}
        for name in self.attribute_names:
            groups.setdefault(attribute_group(name), []).append(name)
        return groups
