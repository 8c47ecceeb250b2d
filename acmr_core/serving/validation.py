"""What a user class may be: its name, its attribute values, the JSON forms they arrive in, and the one rule
for when two class names are the same.

One module, so the app, the API, the store and imports refuse the same bad input with the same one-line
message, and "is this name taken?" has one answer everywhere (the service's check, the store's key, a class
lookup).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence

from acmr_core.errors import UserClassError, quote_value
from acmr_core.fileio import parse_json

MAX_NAME_LENGTH = 80
#: Attribute values below this count as 0: 1e-320 is a valid float but means "absent" to a person, and would
#: otherwise pass the "at least one attribute above 0" rule and then display as 0.
VALUE_EPSILON = 1e-6
#: Longest attributes JSON text accepted, checked before parsing. A full object for CUB's 312 attributes with
#: long names and 17-digit values is about 25 000 characters; 40x that leaves room for any bundle while a
#: client cannot make the app parse (and hold) megabytes.
MAX_ATTRIBUTES_JSON_CHARS = 1_000_000


def fold_name(name: str) -> str:
    """The key two class names are compared by: whitespace runs collapsed, then width- and case-insensitive
    (NFKC + casefold), so 'Zebra', 'zebra ' and the full-width 'Ｚｅｂｒａ' are one name."""
    return unicodedata.normalize("NFKC", " ".join(str(name).split())).casefold()


def validate_name(name: object) -> str:
    """Return the cleaned class name or raise :class:`UserClassError` saying what is wrong with it.

    Names may contain any printable text (including ``<`` or ``&``: the app escapes them wherever it shows
    them); surrounding whitespace is stripped and inner runs of whitespace collapse to one space.
    """
    if not isinstance(name, str):
        raise UserClassError(f"a class name must be text, got {type(name).__name__}")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise UserClassError("the class name is empty; type a name for the new class")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise UserClassError(
            f"the class name is {len(cleaned)} characters long; use at most {MAX_NAME_LENGTH} characters"
        )
    if any(unicodedata.category(char).startswith("C") for char in cleaned):
        raise UserClassError("the class name contains control characters; use printable text only")
    return cleaned


def validate_values(attributes: Mapping[str, object], attribute_names: Sequence[str]) -> tuple[float, ...]:
    """Map ``{attribute name: value}`` to a full value vector; missing attributes are 0.

    Refuses unknown names, non-numbers, NaN/inf and values outside [0, 1], and a class with no attribute set.
    Values below :data:`VALUE_EPSILON` are stored as 0.
    """
    if not isinstance(attributes, Mapping):
        raise UserClassError(
            'attributes must be a JSON object {"attribute name": value in [0, 1]}, '
            f"got {type(attributes).__name__}"
        )
    if len(attributes) > len(attribute_names):  # refused before any per-entry work or message
        raise UserClassError(
            f"{len(attributes)} attribute values given; this model has {len(attribute_names)} attributes"
        )
    index = {name: position for position, name in enumerate(attribute_names)}
    unknown = [name for name in attributes if name not in index]
    if unknown:
        shown = ", ".join(quote_value(name, limit=40) for name in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise UserClassError(
            f"unknown attribute name(s) {shown}{more}; the catalog lists this model's {len(index)} attributes"
        )
    values = [0.0] * len(attribute_names)
    for name, raw in attributes.items():
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise UserClassError(
                f"attribute {quote_value(name)} has value {quote_value(raw)}; use a number between 0 and 1"
            )
        try:
            value = float(raw)
        except OverflowError:  # an int too large for a float (over ~309 digits)
            value = math.inf
        if not math.isfinite(value):
            raise UserClassError(f"attribute {quote_value(name)} is {value}; use a number between 0 and 1")
        if not 0.0 <= value <= 1.0:
            raise UserClassError(
                f"attribute {quote_value(name)} is {value:g}, outside [0, 1]; use a number between 0 and 1"
            )
        values[index[name]] = value if value >= VALUE_EPSILON else 0.0
    if not any(values):
        raise UserClassError(
            f"every attribute is 0 (values below {VALUE_EPSILON:g} count as 0); "
            "set at least one attribute above 0 to describe the class"
        )
    return tuple(values)


def parse_attributes_json(text: object) -> dict[str, object]:
    """Parse the API's attribute argument, a JSON object ``{attribute name: value}`` (NaN refused later)."""
    if not isinstance(text, str) or not text.strip():
        raise UserClassError('attributes are empty; send a JSON object {"attribute name": value in [0, 1]}')
    if len(text) > MAX_ATTRIBUTES_JSON_CHARS:
        raise UserClassError(
            f"the attributes JSON is {len(text)} characters long; at most {MAX_ATTRIBUTES_JSON_CHARS} "
            'are accepted: send one flat object like {"red": 1, "striped": 0.5}'
        )
    try:
        # NaN and Infinity parse here and are refused per attribute by validate_values, naming it.
        parsed = parse_json(text, allow_non_finite=True)
    except ValueError as error:
        raise UserClassError(
            f'attributes are not valid JSON ({error}); send an object like {{"red": 1, "striped": 0.5}}'
        ) from None
    if not isinstance(parsed, dict):
        raise UserClassError(
            f'attributes must be a JSON object {{"attribute": value}}, got a JSON {type(parsed).__name__}'
        )
    return parsed
