"""Durable store of user-defined classes, one SQLite file per bundle, each class owned by one visitor.

A user class is a name plus one value in [0, 1] per attribute of the bundle it was defined for (what a name
and a value may be: :mod:`acmr_core.serving.validation`). Every class has an *owner*: the unguessable token of
the visitor who defined it, or ``""`` in a store shared by everyone (one local user, a curated deployment).
An owner sees, renames, deletes and exports only its own classes; names are unique per owner.

The file uses a WAL journal with ``synchronous=FULL``, so a class is on disk once ``add`` returns and a crash
never leaves a half-written file. Every write runs in one transaction; several threads (the app's request
workers) may use one store at once.

Bounds: an owner holds at most :data:`MAX_USER_CLASSES`, the whole file :data:`MAX_STORED_CLASSES`; an
owner untouched for :data:`OWNER_RETENTION_DAYS` is removed when the store is opened (:meth:`forget_idle`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from acmr_core.errors import UserClassError, quote_value
from acmr_core.fileio import parse_json
from acmr_core.serving.validation import MAX_NAME_LENGTH, fold_name, validate_name, validate_values

log = logging.getLogger(__name__)

#: 2 added the owner of each class (version 1 files, one shared set of classes, are migrated in place).
SCHEMA_VERSION = 2
EXPORT_FORMAT = "acmr-user-classes"
#: Most user classes one owner holds. An add trains one classifier row and a delete none (issue 24: the fast
#: update), whatever the count; rebuilding an owner's classes fits one row per class not in the row cache
#: (measured: docs/benchmarks/app.md, "Fast add and delete").
MAX_USER_CLASSES = 120
#: Most user classes one store file holds over all its owners: the server's disk and start-up bound.
MAX_STORED_CLASSES = 20_000
#: One import file can hold at most this many (and never more than the owner has room for).
MAX_IMPORT_CLASSES = MAX_USER_CLASSES
#: Longest import file accepted, checked before parsing: a full set of full classes.
MAX_IMPORT_CHARS = MAX_IMPORT_CLASSES * 1_000_000
#: The owner of every class in a store shared by all visitors (never a visitor token: those are not empty).
SHARED_OWNER = ""
#: An owner whose classes nobody has used for this long is forgotten (a visitor who never came back).
OWNER_RETENTION_DAYS = 90


@dataclass(frozen=True)
class UserClass:
    """A class defined by a user: its name and one value in [0, 1] per attribute (bundle order)."""

    name: str
    values: tuple[float, ...]
    created: float

    def attributes(self, attribute_names: Sequence[str]) -> dict[str, float]:
        return dict(zip(attribute_names, self.values, strict=True))


class UserClassStore:
    """User classes of one bundle, kept in a SQLite file; every method acts for one ``owner``.

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
                stored = dict(cursor.execute("SELECT key, value FROM meta").fetchall())
                expected = {"bundle": self.bundle_key, "attributes": json.dumps(self.attribute_names)}
                for key, value in expected.items():
                    if stored and stored.get(key) != value:
                        raise UserClassError(
                            f"the user-class store {self.path} belongs to another bundle or version "
                            f"({key} differs); point the app at another store folder or move the file away"
                        )
                if stored.get("schema") == "1":
                    _migrate_from_1(cursor)
                elif stored and stored.get("schema") != str(SCHEMA_VERSION):
                    raise UserClassError(
                        f"the user-class store {self.path} has schema {stored.get('schema')!r}, newer than "
                        f"this version reads ({SCHEMA_VERSION}); upgrade, or point the app at another folder"
                    )
                _create_tables(cursor)
                expected["schema"] = str(SCHEMA_VERSION)
                cursor.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sorted(expected.items()))

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

    def list(self, owner: str = SHARED_OWNER) -> list[UserClass]:
        """The owner's classes, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT name, vals, created FROM classes WHERE owner = ? ORDER BY created, name", (owner,)
            )
            return [UserClass(name, tuple(json.loads(vals)), created) for name, vals, created in rows]

    def get(self, name: str, owner: str = SHARED_OWNER) -> UserClass | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT name, vals, created FROM classes WHERE owner = ? AND folded = ?",
                (owner, fold_name(name)),
            ).fetchone()
        return None if row is None else UserClass(row[0], tuple(json.loads(row[1])), row[2])

    def count(self, owner: str | None = SHARED_OWNER) -> int:
        """How many classes the owner has (``None``: all owners together)."""
        with self._lock:
            if owner is None:
                return int(self._connection.execute("SELECT COUNT(*) FROM classes").fetchone()[0])
            query = "SELECT COUNT(*) FROM classes WHERE owner = ?"
            return int(self._connection.execute(query, (owner,)).fetchone()[0])

    def __len__(self) -> int:
        return self.count(None)

    # -- writes ---------------------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        attributes: Mapping[str, object],
        reserved_names: Sequence[str] = (),
        owner: str = SHARED_OWNER,
    ) -> UserClass:
        """Validate and store a new class; ``reserved_names`` are names it may not take (the bundle's)."""
        cleaned = validate_name(name)
        values = validate_values(attributes, self.attribute_names)
        self._check_free(cleaned, reserved_names, owner)
        self.check_room(1, owner)
        user_class = UserClass(cleaned, values, time.time())
        try:
            with self._transaction() as cursor:
                _insert(cursor, owner, [user_class])
        except sqlite3.IntegrityError:
            raise UserClassError(f"a class named {cleaned!r} already exists; choose another name") from None
        log.info("stored user class %r", cleaned)
        return user_class

    def rename(
        self, old: str, new: str, reserved_names: Sequence[str] = (), owner: str = SHARED_OWNER
    ) -> UserClass:
        current = self._require(old, owner)
        cleaned = validate_name(new)
        if fold_name(cleaned) != fold_name(current.name):
            self._check_free(cleaned, reserved_names, owner)
        try:
            with self._transaction() as cursor:
                cursor.execute(
                    "UPDATE classes SET name = ?, folded = ? WHERE owner = ? AND folded = ?",
                    (cleaned, fold_name(cleaned), owner, fold_name(current.name)),
                )
                _touch(cursor, owner)
        except sqlite3.IntegrityError:
            raise UserClassError(f"a class named {cleaned!r} already exists; choose another name") from None
        return UserClass(cleaned, current.values, current.created)

    def delete(self, name: str, owner: str = SHARED_OWNER) -> UserClass:
        current = self._require(name, owner)
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM classes WHERE owner = ? AND folded = ?", (owner, fold_name(current.name))
            )
            _touch(cursor, owner)
        log.info("deleted user class %r", current.name)
        return current

    def touch(self, owner: str) -> None:
        """Record that the owner's classes were just used (keeps them from :meth:`forget_idle`)."""
        with self._transaction() as cursor:
            _touch(cursor, owner)

    def forget_idle(self, days: float = OWNER_RETENTION_DAYS) -> int:
        """Remove the classes of every owner (but the shared one) untouched for ``days``; how many went."""
        cutoff = time.time() - days * 86_400
        with self._transaction() as cursor:
            idle = [
                row[0] for row in cursor.execute("SELECT owner FROM owners WHERE last_seen < ?", (cutoff,))
            ]
            idle = [owner for owner in idle if owner != SHARED_OWNER]
            removed = 0
            for owner in idle:
                removed += cursor.execute("DELETE FROM classes WHERE owner = ?", (owner,)).rowcount
                cursor.execute("DELETE FROM owners WHERE owner = ?", (owner,))
        if idle:
            log.info("forgot %d user classes of %d visitors idle for %g days", removed, len(idle), days)
        return removed

    def _require(self, name: object, owner: str) -> UserClass:
        if not isinstance(name, str) or not name.strip():
            raise UserClassError("no class name given; pick one of your classes")
        found = self.get(name, owner)
        if found is None:
            raise UserClassError(f"there is no user class named {quote_value(name, MAX_NAME_LENGTH)}")
        return found

    def check_room(self, adding: int, owner: str = SHARED_OWNER) -> None:
        """Refuse to grow past :data:`MAX_USER_CLASSES` for the owner or :data:`MAX_STORED_CLASSES` in all,
        naming the limit that was reached."""
        own = self.count(owner)
        if own + adding > MAX_USER_CLASSES:
            room = max(MAX_USER_CLASSES - own, 0)
            raise UserClassError(
                f"you already have {own} classes and one visitor holds at most {MAX_USER_CLASSES} "
                f"(room for {room} more); delete some of yours first"
            )
        total = self.count(None)
        if total + adding > MAX_STORED_CLASSES:
            raise UserClassError(
                f"this server holds its limit of {MAX_STORED_CLASSES} user classes over all visitors "
                f"({total} stored); no class can be added now, try again later"
            )

    def _check_free(self, name: str, reserved_names: Sequence[str], owner: str) -> None:
        folded = fold_name(name)
        if any(fold_name(reserved) == folded for reserved in reserved_names):
            raise UserClassError(f"{name!r} is already a class of this model; choose another name")
        if self.get(name, owner) is not None:
            raise UserClassError(f"a class named {name!r} already exists; choose another name")

    # -- export / import ------------------------------------------------------------------------------------

    def export_json(self, owner: str | None = SHARED_OWNER) -> str:
        """The owner's classes as a JSON document that :meth:`import_json` (here or elsewhere) reads
        (``None``: no owner, no classes)."""
        document = {
            "format": EXPORT_FORMAT,
            "version": SCHEMA_VERSION,
            "bundle": self.bundle_key,
            "classes": [
                {"name": item.name, "attributes": item.attributes(self.attribute_names)}
                for item in ([] if owner is None else self.list(owner))
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)

    def parse_import(
        self, text: str, reserved_names: Sequence[str] = (), owner: str = SHARED_OWNER
    ) -> list[UserClass]:
        """The classes of an export, validated for the owner (nothing stored); one bad or clashing class
        refuses the whole file."""
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
        self.check_room(len(entries), owner)
        prepared: list[UserClass] = []
        seen: set[str] = set()
        now = time.time()
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise UserClassError(f"class #{position + 1} of the import file is not an object")
            try:
                name = validate_name(entry.get("name"))
                values = validate_values(entry.get("attributes"), self.attribute_names)
                if fold_name(name) in seen:
                    raise UserClassError(f"the import file lists {name!r} twice")
                self._check_free(name, reserved_names, owner)
            except UserClassError as error:
                raise UserClassError(f"import refused, class #{position + 1}: {error}") from None
            seen.add(fold_name(name))
            prepared.append(UserClass(name, values, now + position * 1e-6))
        return prepared

    def add_all(self, classes: Sequence[UserClass], owner: str = SHARED_OWNER) -> list[UserClass]:
        """Store classes from :meth:`parse_import` in one transaction (all or nothing)."""
        self.check_room(len(classes), owner)
        try:
            with self._transaction() as cursor:
                _insert(cursor, owner, classes)
        except sqlite3.IntegrityError:
            raise UserClassError(
                "import refused: a class of the file was added meanwhile; try again"
            ) from None
        log.info("imported %d user classes", len(classes))
        return list(classes)

    def import_json(
        self, text: str, reserved_names: Sequence[str] = (), owner: str = SHARED_OWNER
    ) -> list[UserClass]:
        """Add every class of an export; all or nothing: one bad or clashing class refuses the whole file."""
        return self.add_all(self.parse_import(text, reserved_names, owner), owner)


def _create_tables(cursor: sqlite3.Cursor) -> None:
    cursor.execute(
        "CREATE TABLE IF NOT EXISTS classes (owner TEXT NOT NULL, name TEXT NOT NULL, folded TEXT NOT NULL,"
        " vals TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (owner, folded))"
    )
    cursor.execute("CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, last_seen REAL NOT NULL)")


def _migrate_from_1(cursor: sqlite3.Cursor) -> None:
    """Version 1 held one shared set of classes (keyed by name alone): they become the shared owner's."""
    cursor.execute("ALTER TABLE classes RENAME TO classes_v1")
    _create_tables(cursor)
    cursor.execute(
        "INSERT INTO classes (owner, name, folded, vals, created)"
        " SELECT ?, name, folded, vals, created FROM classes_v1",
        (SHARED_OWNER,),
    )
    cursor.execute("DROP TABLE classes_v1")
    log.info("user-class store migrated from schema 1 to %d", SCHEMA_VERSION)


def _insert(cursor: sqlite3.Cursor, owner: str, classes: Sequence[UserClass]) -> None:
    cursor.executemany(
        "INSERT INTO classes (owner, name, folded, vals, created) VALUES (?, ?, ?, ?, ?)",
        [(owner, item.name, fold_name(item.name), json.dumps(item.values), item.created) for item in classes],
    )
    _touch(cursor, owner)


def _touch(cursor: sqlite3.Cursor, owner: str) -> None:
    cursor.execute("INSERT OR REPLACE INTO owners (owner, last_seen) VALUES (?, ?)", (owner, time.time()))


def open_store(
    folder: str | Path, bundle_name: str, attribute_names: Sequence[str], *, per_visitor: bool = False
) -> UserClassStore:
    """The user-class store of a bundle: one SQLite file per bundle name and attribute list.

    Keyed on the attributes rather than the weights, so user classes survive a retrained bundle (a class is
    an attribute vector); a bundle with other attributes gets a store of its own. Visitors' classes live in
    a file of their own (``….visitors.sqlite3``), apart from the shared store a local user keeps, so serving
    one folder in both modes never mixes the two. Opening a visitors' store forgets long-idle visitors.
    """
    attributes_key = hashlib.sha256(json.dumps(list(attribute_names)).encode()).hexdigest()[:12]
    safe_name = "".join(char if char.isalnum() or char in "-_." else "_" for char in bundle_name) or "bundle"
    suffix = ".visitors.sqlite3" if per_visitor else ".sqlite3"
    store = UserClassStore(
        Path(folder) / f"{safe_name}-{attributes_key}{suffix}",
        bundle_key=f"{bundle_name}#{attributes_key}",
        attribute_names=attribute_names,
    )
    if per_visitor:
        store.forget_idle()
    return store
