"""Durable, per-bundle store of user-defined classes.

A user class is a name plus one value in [0, 1] per attribute of the bundle it was defined for. The store is
one SQLite file per bundle (WAL journal, ``synchronous=FULL``), so a class is on disk once ``add`` returns and
a crash never leaves a half-written file. Every write runs in one transaction; several threads (the app's
request workers) may use one store at once.

Validation lives here too (names, attribute values, JSON exports) so the app, the API and imports all refuse
the same bad input with the same one-line message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from acmr_core.errors import UserClassError, quote_value
from acmr_core.fileio import parse_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EXPORT_FORMAT = "acmr-user-classes"
MAX_NAME_LENGTH = 80
#: Most user classes one bundle's store holds. An add trains one classifier row and a delete none (issue 24:
#: the fast update), whatever the count; start-up fits one row per stored class, so the total is still capped
#: (measured: docs/benchmarks/app.md, "Fast add and delete").
MAX_USER_CLASSES = 120
#: One import file can hold at most this many (and never more than the store has room for).
MAX_IMPORT_CLASSES = MAX_USER_CLASSES
#: Attribute values below this count as 0: 1e-320 is a valid float but means "absent" to a person, and would
#: otherwise pass the "at least one attribute above 0" rule and then display as 0.
VALUE_EPSILON = 1e-6
#: Longest attributes JSON text accepted, checked before parsing. A full object for CUB's 312 attributes with
#: long names and 17-digit values is about 25 000 characters; 40x that leaves room for any bundle while a
#: client cannot make the app parse (and hold) megabytes.
MAX_ATTRIBUTES_JSON_CHARS = 1_000_000
#: Longest import file accepted, checked before parsing: a full store of full classes.
MAX_IMPORT_CHARS = MAX_IMPORT_CLASSES * MAX_ATTRIBUTES_JSON_CHARS


@dataclass(frozen=True)
class UserClass:
    """A class defined by a user: its name and one value in [0, 1] per attribute (bundle order)."""

    name: str
    values: tuple[float, ...]
    created: float

    def attributes(self, attribute_names: Sequence[str]) -> dict[str, float]:
        return dict(zip(attribute_names, self.values, strict=True))


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


class UserClassStore:
    """User classes of one bundle, kept in a SQLite file.

    ``bundle_key`` identifies the bundle; a store file written for another bundle, or for other attributes,
    is refused rather than silently mixed in.
    """

    def __init__(self, path: str | Path, bundle_key: str, attribute_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.bundle_key = bundle_key
        self.attribute_names = tuple(attribute_names)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection shared by all threads; the lock serialises its use.
            self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise UserClassError(f"cannot open the user-class store {self.path}: {error}") from None
        try:
            self._initialise()
        except sqlite3.DatabaseError as error:
            self._connection.close()
            raise UserClassError(
                f"the user-class store {self.path} is not a readable SQLite file ({error}); "
                "move it away to start an empty store"
            ) from None

    # -- setup ----------------------------------------------------------------------------------------------

    def _initialise(self) -> None:
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a class is durable once add() returns, even across a power cut.
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA busy_timeout=5000")
            with self._transaction() as cursor:
                cursor.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                cursor.execute(
                    "CREATE TABLE IF NOT EXISTS classes ("
                    " name TEXT NOT NULL, folded TEXT PRIMARY KEY, vals TEXT NOT NULL, created REAL NOT NULL)"
                )
                expected = {
                    "schema": str(SCHEMA_VERSION),
                    "bundle": self.bundle_key,
                    "attributes": json.dumps(self.attribute_names),
                }
                stored = dict(cursor.execute("SELECT key, value FROM meta").fetchall())
                if not stored:
                    cursor.executemany("INSERT INTO meta VALUES (?, ?)", sorted(expected.items()))
                    return
                for key, value in expected.items():
                    if stored.get(key) != value:
                        raise UserClassError(
                            f"the user-class store {self.path} belongs to another bundle or version "
                            f"({key} differs); point the app at another store folder or move the file away"
                        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            else:
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    # -- reads ----------------------------------------------------------------------------------------------

    def list(self) -> list[UserClass]:
        """All user classes, oldest first."""
        with self._lock:
            rows = self._connection.execute("SELECT name, vals, created FROM classes ORDER BY created, name")
            return [UserClass(name, tuple(json.loads(vals)), created) for name, vals, created in rows]

    def get(self, name: str) -> UserClass | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT name, vals, created FROM classes WHERE folded = ?", (_fold(name),)
            ).fetchone()
        return None if row is None else UserClass(row[0], tuple(json.loads(row[1])), row[2])

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM classes").fetchone()[0])

    # -- writes ---------------------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        attributes: Mapping[str, object],
        reserved_names: Sequence[str] = (),
    ) -> UserClass:
        """Validate and store a new class; ``reserved_names`` are names it may not take (the bundle's)."""
        cleaned = validate_name(name)
        values = validate_values(attributes, self.attribute_names)
        self._check_free(cleaned, reserved_names)
        self.check_room(1)
        user_class = UserClass(cleaned, values, time.time())
        try:
            with self._transaction() as cursor:
                cursor.execute(
                    "INSERT INTO classes (name, folded, vals, created) VALUES (?, ?, ?, ?)",
                    (cleaned, _fold(cleaned), json.dumps(values), user_class.created),
                )
        except sqlite3.IntegrityError:
            raise UserClassError(f"a class named {cleaned!r} already exists; choose another name") from None
        log.info("stored user class %r", cleaned)
        return user_class

    def rename(self, old: str, new: str, reserved_names: Sequence[str] = ()) -> UserClass:
        current = self._require(old)
        cleaned = validate_name(new)
        if _fold(cleaned) != _fold(current.name):
            self._check_free(cleaned, reserved_names)
        try:
            with self._transaction() as cursor:
                cursor.execute(
                    "UPDATE classes SET name = ?, folded = ? WHERE folded = ?",
                    (cleaned, _fold(cleaned), _fold(current.name)),
                )
        except sqlite3.IntegrityError:
            raise UserClassError(f"a class named {cleaned!r} already exists; choose another name") from None
        return UserClass(cleaned, current.values, current.created)

    def delete(self, name: str) -> UserClass:
        current = self._require(name)
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM classes WHERE folded = ?", (_fold(current.name),))
        log.info("deleted user class %r", current.name)
        return current

    def _require(self, name: object) -> UserClass:
        if not isinstance(name, str) or not name.strip():
            raise UserClassError("no class name given; pick one of your classes")
        found = self.get(" ".join(name.split()))
        if found is None:
            raise UserClassError(f"there is no user class named {quote_value(name, MAX_NAME_LENGTH)}")
        return found

    def check_room(self, adding: int) -> None:
        """Refuse to grow past :data:`MAX_USER_CLASSES` (the bound on every add, delete and start-up)."""
        stored = len(self)
        if stored + adding > MAX_USER_CLASSES:
            room = max(MAX_USER_CLASSES - stored, 0)
            raise UserClassError(
                f"this model already has {stored} user classes and holds at most {MAX_USER_CLASSES} "
                f"(room for {room} more); delete some of yours first"
            )

    def _check_free(self, name: str, reserved_names: Sequence[str]) -> None:
        folded = _fold(name)
        if any(_fold(reserved) == folded for reserved in reserved_names):
            raise UserClassError(f"{name!r} is already a class of this model; choose another name")
        if self.get(name) is not None:
            raise UserClassError(f"a class named {name!r} already exists; choose another name")

    # -- export / import ------------------------------------------------------------------------------------

    def export_json(self) -> str:
        """All user classes as a JSON document that :meth:`import_json` (here or on another machine) reads."""
        document = {
            "format": EXPORT_FORMAT,
            "version": SCHEMA_VERSION,
            "bundle": self.bundle_key,
            "classes": [
                {"name": item.name, "attributes": item.attributes(self.attribute_names)}
                for item in self.list()
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)

    def import_json(self, text: str, reserved_names: Sequence[str] = ()) -> list[UserClass]:
        """Add every class of an export; all or nothing: one bad or clashing class refuses the whole file."""
        if isinstance(text, (str, bytes)) and len(text) > MAX_IMPORT_CHARS:
            raise UserClassError(
                f"the import file is {len(text)} characters long; an export is at most {MAX_IMPORT_CHARS}"
            )
        try:
            document = parse_json(text, allow_non_finite=True)  # NaN is refused per class, naming it
        except (ValueError, TypeError) as error:
            raise UserClassError(
                f"the import file is not valid JSON ({error}); choose an exported file"
            ) from None
        if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
            raise UserClassError(f"the import file is not an {EXPORT_FORMAT} export; choose an exported file")
        entries = document.get("classes")
        if not isinstance(entries, list):
            raise UserClassError("the import file has no 'classes' list; choose an exported file")
        if len(entries) > MAX_IMPORT_CLASSES:
            raise UserClassError(f"the import file has {len(entries)} classes; at most {MAX_IMPORT_CLASSES}")
        self.check_room(len(entries))
        prepared: list[UserClass] = []
        seen: set[str] = set()
        now = time.time()
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise UserClassError(f"class #{position + 1} of the import file is not an object")
            try:
                name = validate_name(entry.get("name"))
                values = validate_values(entry.get("attributes"), self.attribute_names)
                if _fold(name) in seen:
                    raise UserClassError(f"the import file lists {name!r} twice")
                self._check_free(name, reserved_names)
            except UserClassError as error:
                raise UserClassError(f"import refused, class #{position + 1}: {error}") from None
            seen.add(_fold(name))
            prepared.append(UserClass(name, values, now + position * 1e-6))
        try:
            with self._transaction() as cursor:
                cursor.executemany(
                    "INSERT INTO classes (name, folded, vals, created) VALUES (?, ?, ?, ?)",
                    [
                        (item.name, _fold(item.name), json.dumps(item.values), item.created)
                        for item in prepared
                    ],
                )
        except sqlite3.IntegrityError:
            raise UserClassError(
                "import refused: a class of the file was added meanwhile; try again"
            ) from None
        log.info("imported %d user classes", len(prepared))
        return prepared


def _fold(name: str) -> str:
    """Case- and width-insensitive key, so 'Zebra' and 'zebra' cannot both exist."""
    return unicodedata.normalize("NFKC", name).casefold()


def open_store(folder: str | Path, bundle_name: str, attribute_names: Sequence[str]) -> UserClassStore:
    """The user-class store of a bundle: one SQLite file per bundle name and attribute list.

    Keyed on the attributes rather than the weights, so user classes survive a retrained bundle (a class is
    an attribute vector); a bundle with other attributes gets a store of its own.
    """
    attributes_key = hashlib.sha256(json.dumps(list(attribute_names)).encode()).hexdigest()[:12]
    safe_name = "".join(char if char.isalnum() or char in "-_." else "_" for char in bundle_name) or "bundle"
    return UserClassStore(
        Path(folder) / f"{safe_name}-{attributes_key}.sqlite3",
        bundle_key=f"{bundle_name}#{attributes_key}",
        attribute_names=attribute_names,
    )
