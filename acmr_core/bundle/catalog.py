"""The classes a bundle knows: names, descriptions, seen/unseen flags, grouped attribute names, and the
class-attribute matrix; and the class-metadata JSON format that ``acmr bundle --classes`` reads."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acmr_core.data.classes import ClassTable, attribute_group
from acmr_core.errors import DataError, quote_value
from acmr_core.fileio import read_json

if TYPE_CHECKING:
    from acmr_core.data.demo_world import DemoWorld


@dataclass(frozen=True)
class ClassCatalog(ClassTable):
    """The classes a bundle knows: names, seen/unseen flags, and the class-attribute matrix (seen / unseen
    indices, kinds and attribute groups come from :class:`~acmr_core.data.classes.ClassTable`)."""

    names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    attribute_matrix: np.ndarray  # (classes, attributes) float32
    seen_mask: np.ndarray  # (classes,) bool
    descriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        matrix = np.asarray(self.attribute_matrix, dtype=np.float32)
        seen = np.asarray(self.seen_mask, dtype=bool)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "attribute_names", tuple(str(a) for a in self.attribute_names))
        object.__setattr__(self, "attribute_matrix", matrix)
        object.__setattr__(self, "seen_mask", seen)
        descriptions = tuple(str(d) for d in self.descriptions) or ("",) * len(self.names)
        object.__setattr__(self, "descriptions", descriptions)
        self._validate()

    def _validate(self) -> None:
        n_classes, n_attributes = len(self.names), len(self.attribute_names)
        if n_classes < 2 or n_attributes < 1:
            raise DataError(
                f"a class catalog needs >= 2 classes and >= 1 attribute, got {n_classes} and {n_attributes}"
            )
        blank = [i for i, n in enumerate(self.names) if not n.strip()]
        if blank:
            raise DataError(f"class {blank[0]} has an empty name; every class needs a name")
        for what, values in (("class", self.names), ("attribute", self.attribute_names)):
            seen_before: set[str] = set()
            for value in values:
                if value.casefold() in seen_before:
                    raise DataError(f"duplicate {what} name {quote_value(value)}; names must be unique")
                seen_before.add(value.casefold())
        if self.attribute_matrix.shape != (n_classes, n_attributes):
            raise DataError(
                f"attribute matrix has shape {self.attribute_matrix.shape}; "
                f"expected ({n_classes}, {n_attributes})"
            )
        if not np.all(np.isfinite(self.attribute_matrix)):
            raise DataError("the attribute matrix contains NaN or infinite values")
        if self.seen_mask.shape != (n_classes,):
            raise DataError(f"seen flags have shape {self.seen_mask.shape}; expected ({n_classes},)")
        if not self.seen_mask.any() or self.seen_mask.all():
            raise DataError("a catalog needs at least one seen and one unseen class (set 'seen' per class)")
        if len(self.descriptions) != n_classes:
            raise DataError(f"{len(self.descriptions)} descriptions for {n_classes} classes")

    @classmethod
    def from_demo_world(cls, world: DemoWorld) -> ClassCatalog:
        """The catalog of a demo world's classes: what a demo bundle knows of them."""
        return cls(
            names=world.names,
            attribute_names=tuple(world.attribute_names),
            attribute_matrix=world.attribute_matrix(),
            seen_mask=world.seen_mask,
            descriptions=world.descriptions,
        )

    def index_of(self, name: str) -> int:
        lookup = {n.casefold(): i for i, n in enumerate(self.names)}
        found = lookup.get(str(name).casefold())
        if found is None:
            raise DataError(f"class {quote_value(name)} is not in the catalog")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "attributes": [{"name": n, "group": attribute_group(n)} for n in self.attribute_names],
            "classes": [
                {
                    "name": name,
                    "seen": bool(seen),
                    "description": description,
                    "attributes": [float(v) for v in row],
                }
                for name, seen, description, row in zip(
                    self.names, self.seen_mask, self.descriptions, self.attribute_matrix, strict=True
                )
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "class metadata") -> ClassCatalog:
        """Parse the class-metadata JSON format (documented in docs/bundles.md)."""
        if not isinstance(data, Mapping):
            raise DataError(f"{source} must be a JSON object with 'attributes' and 'classes'")
        attributes, classes = data.get("attributes"), data.get("classes")
        if not isinstance(attributes, list) or not isinstance(classes, list):
            raise DataError(f"{source} needs an 'attributes' list and a 'classes' list")
        names = [a.get("name") if isinstance(a, Mapping) else a for a in attributes]
        if not all(isinstance(n, str) for n in names):
            raise DataError(f"{source}: every attribute must be a name (string) or an object with a 'name'")
        rows, class_names, seen, descriptions = [], [], [], []
        for position, entry in enumerate(classes):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise DataError(f"{source}: class {position} must be an object with a 'name' string")
            if not isinstance(entry.get("seen"), bool):
                raise DataError(f"{source}: class {quote_value(entry['name'])} needs 'seen': true or false")
            rows.append(_attribute_row(entry.get("attributes"), names, entry["name"], source))
            class_names.append(entry["name"])
            seen.append(entry["seen"])
            descriptions.append(str(entry.get("description", "")))
        return cls(
            names=tuple(class_names),
            attribute_names=tuple(names),
            attribute_matrix=np.array(rows, dtype=np.float32).reshape(len(rows), len(names)),
            seen_mask=np.array(seen, dtype=bool),
            descriptions=tuple(descriptions),
        )


def _attribute_row(values: Any, names: Sequence[str], class_name: str, source: str) -> list[float]:
    """A class's attribute values: a list in attribute order, or an object {name: value} (missing = 0)."""
    where = f"{source}: class {quote_value(class_name)}"
    if isinstance(values, Mapping):
        unknown = [k for k in values if k not in names]
        if unknown:
            raise DataError(f"{where} has unknown attribute {quote_value(unknown[0])}")
        row = [values.get(n, 0.0) for n in names]
    elif isinstance(values, list):
        if len(values) != len(names):
            raise DataError(f"{where} has {len(values)} attribute values for {len(names)} names")
        row = values
    else:
        raise DataError(f"{where} needs 'attributes' as a list or an object")
    try:
        floats = [float(v) for v in row]
    except (TypeError, ValueError):
        raise DataError(f"{where} has a non-numeric attribute value") from None
    except OverflowError:  # an integer beyond any float
        raise DataError(f"{where} has an attribute value too large to be a number") from None
    if not all(math.isfinite(v) for v in floats):
        raise DataError(f"{where} has a NaN or infinite attribute value")
    return floats


def load_class_metadata(path: str | Path) -> ClassCatalog:
    """Read a class-metadata JSON file (``acmr bundle --classes``)."""
    path = Path(path)
    data = read_json(
        path, f"class metadata file {path}", DataError, "it must be a JSON file", allow_non_finite=True
    )  # NaN parses: _attribute_row refuses it naming the class
    return ClassCatalog.from_dict(data, source=str(path))
