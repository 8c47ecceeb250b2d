"""The write side of the service: each visitor's own user classes, and the class snapshot each one predicts
with.

A visitor is named by an owner key (an unguessable browser token, an API client's session); a store shared
by everyone maps every visitor to :data:`~acmr_core.serving.user_classes.SHARED_OWNER`. A visitor's classes
live in the store (durable) and, while in use, as a resident :class:`ClassSpace` (bundle classes + theirs,
with a classifier over them). Residents are bounded: at most :data:`MAX_RESIDENT_VISITORS`, none idle for
more than :data:`IDLE_EVICTION_S`; an evicted visitor's snapshot is rebuilt from the store on return.

Concurrency: reads take a resident snapshot with no lock. A visitor's writes (and a rebuild of their
snapshot) hold that visitor's own lock, so two edits of one visitor are serialised while other visitors'
edits and everyone's predictions go on.

Refinement (``refine=True``, what a served app uses): an edit is answered at once with the fast classifier
update (one row fitted per added class), and a background worker then re-fits the visitor's whole
classifier (seconds on one core) and swaps it in, unless the visitor edited meanwhile (the newer edit
schedules its own). With many user classes the fast rows alone lose accuracy on seen classes (each row is
fitted alone, and their shares of a seen image add up); the refined classifier is the full re-fit.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from acmr_core.errors import UserClassError
from acmr_core.serving.class_space import ClassSpace, SpaceBuilder
from acmr_core.serving.user_classes import SHARED_OWNER, UserClass, UserClassStore
from acmr_core.serving.validation import validate_name, validate_values

log = logging.getLogger(__name__)

#: Most visitors whose snapshots are kept in memory (least recently used go first). A snapshot with 100
#: user classes of the demo bundle is about 0.1 MB, so this bounds the server's per-visitor memory.
MAX_RESIDENT_VISITORS = 256
#: A visitor whose snapshot was not used for this long is evicted (rebuilt from the store on return).
IDLE_EVICTION_S = 30 * 60.0
#: What a visitor key looks like: a browser's token (:func:`new_visitor_token`) or an API client's session.
#: Anything else (a tampered browser value, an over-long string) is an anonymous visitor, who keeps no class.
VISITOR_KEY = re.compile(r"[A-Za-z0-9_-]{16,80}")
#: Checks a class's values beyond validation (e.g. that the demo world can draw it); raises UserClassError.
ValuesCheck = Callable[[tuple[float, ...]], None]


def new_visitor_token() -> str:
    """A fresh visitor token: 256 random bits, so nobody can guess another visitor's classes into view."""
    return secrets.token_urlsafe(32)


def is_visitor_key(value: object) -> bool:
    return isinstance(value, str) and VISITOR_KEY.fullmatch(value) is not None


@dataclass
class _Resident:
    space: ClassSpace
    lock: threading.Lock  # held here so the visitor's lock outlives edits while the snapshot is resident
    last_used: float


class VisitorClasses:
    """Every visitor's user classes over one bundle (thread-safe; see the module docstring)."""

    def __init__(
        self,
        builder: SpaceBuilder,
        store: UserClassStore,
        *,
        per_visitor: bool,
        check_values: ValuesCheck | None = None,
        max_resident: int = MAX_RESIDENT_VISITORS,
        idle_eviction_s: float = IDLE_EVICTION_S,
        refine: bool = False,
    ) -> None:
        self.builder = builder
        self.store = store
        self.per_visitor = per_visitor
        self._check_values = check_values
        self._max_resident = max(int(max_resident), 1)
        self._idle_eviction_s = float(idle_eviction_s)
        self._resident: OrderedDict[str, _Resident] = OrderedDict()
        self._mutex = threading.Lock()  # guards _resident and _locks, held for microseconds
        # One lock per visitor while anything refers to it (a resident snapshot or a running edit).
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._refiner = _Refiner(self._refine) if refine else None

    # ---- who is asking -----------------------------------------------------------------------------------

    def owner(self, visitor: str | None) -> str | None:
        """The store owner a visitor's classes belong to (``None``: an anonymous visitor, who has none)."""
        if not self.per_visitor:
            return SHARED_OWNER
        return visitor if is_visitor_key(visitor) else None

    def _writer(self, visitor: str | None) -> str:
        owner = self.owner(visitor)
        if owner is None:
            raise UserClassError("this page has no visitor id yet, so a class could not be kept; reload it")
        return owner

    # ---- reads -------------------------------------------------------------------------------------------

    def space(self, visitor: str | None) -> ClassSpace:
        """The visitor's current snapshot (bundle classes, then theirs): resident, or rebuilt."""
        owner = self.owner(visitor)
        if owner is None:
            return self.builder.base
        with self._mutex:
            resident = self._resident.get(owner)
            if resident is not None:
                resident.last_used = time.monotonic()
                self._resident.move_to_end(owner)
                return resident.space
        if self.store.count(owner) == 0:  # nothing to keep in memory for a visitor without classes
            return self.builder.base
        lock = self._lock_of(owner)
        with lock:
            return self._load(owner, lock).space

    def user_classes(self, visitor: str | None) -> tuple[UserClass, ...]:
        return self.space(visitor).user_classes

    def export_json(self, visitor: str | None) -> str:
        """The visitor's classes as an export (an anonymous visitor's has none)."""
        return self.store.export_json(self.owner(visitor))

    # ---- writes ------------------------------------------------------------------------------------------

    def define(self, visitor: str | None, name: object, attributes: Mapping[str, object]) -> UserClass:
        """Add a class for the visitor; it is in their snapshot from the moment this returns, with the
        separability guard's verdict (``space.verdict(name)``): a class the model cannot tell apart from
        another is added with a warning naming it, never silently (issue 32)."""
        cleaned = validate_name(name)
        values = validate_values(attributes, self.builder.attribute_names)
        self._check(values)
        owner = self._writer(visitor)
        lock = self._lock_of(owner)
        with lock:
            current = self._load(owner, lock)
            self._check_name_free(current.space, cleaned)
            self.store.check_room(1, owner)  # before the fit: a refusal costs nothing
            candidate = UserClass(cleaned, values, time.time())
            verdict = self.builder.judge(current.space, np.asarray(values, dtype=np.float32))
            space = self.builder.build(
                (*current.space.user_classes, candidate), (*current.space.verdicts, verdict)
            )  # fit first: nothing half-done
            stored = self.store.add(
                cleaned, dict(zip(self.builder.attribute_names, values, strict=True)),
                self.builder.bundle_names, owner,
            )  # fmt: skip
            self._keep(owner, current, replace(space, user_classes=(*current.space.user_classes, stored)))
            self._schedule_refinement(owner)
        return stored

    def rename(self, visitor: str | None, old: str, new: str) -> UserClass:
        owner = self._writer(visitor)
        lock = self._lock_of(owner)
        with lock:
            current = self._load(owner, lock)
            space = current.space
            position = space.position(old) if space.has(old) else -1
            n_bundle = len(self.builder.bundle_names)
            if 0 <= position < n_bundle:
                raise UserClassError(f"{space.names[position]!r} is one of the model's classes; only yours "
                                     "can be renamed")  # fmt: skip
            renamed = self.store.rename(old, new, self.builder.bundle_names, owner)
            # Same classes in the same order: only a name changes, so no re-fit is needed.
            user_classes = list(space.user_classes)
            user_classes[position - n_bundle] = renamed
            self._keep(owner, current, replace(
                space, names=space.names[:n_bundle] + tuple(item.name for item in user_classes),
                user_classes=tuple(user_classes),
                verdicts=tuple(verdict.renamed(old, renamed.name) for verdict in space.verdicts),
            ))  # fmt: skip
            self._schedule_refinement(owner)  # a refinement of the old names is discarded
        return renamed

    def delete(self, visitor: str | None, name: object) -> UserClass:
        """Delete one of the visitor's classes (the bundle's own cannot be deleted)."""
        if not isinstance(name, str) or not name.strip():
            raise UserClassError("no class name given; pick one of your classes to delete")
        owner = self._writer(visitor)
        lock = self._lock_of(owner)
        with lock:
            current = self._load(owner, lock)
            space = current.space
            position = space.position(name)
            n_bundle = len(self.builder.bundle_names)
            if position < n_bundle:
                raise UserClassError(
                    f"{space.names[position]!r} is one of the model's classes; only yours can be deleted"
                )
            kept = [i for i in range(len(space.user_classes)) if i != position - n_bundle]
            remaining = tuple(space.user_classes[i] for i in kept)
            gone = space.names[position]  # the others' verdicts no longer name it
            verdicts = tuple(space.verdicts[i].without(gone) for i in kept if i < len(space.verdicts))
            new_space = self.builder.build(remaining, verdicts)  # fit first: a failure leaves all as it was
            removed = self.store.delete(space.names[position], owner)
            self._keep(owner, current, new_space)
            self._schedule_refinement(owner)
        return removed

    def import_json(self, visitor: str | None, text: str) -> list[UserClass]:
        """Import an export for the visitor (all or nothing); one fit for the whole file."""
        owner = self._writer(visitor)
        lock = self._lock_of(owner)
        with lock:
            current = self._load(owner, lock)
            prepared = self.store.parse_import(text, self.builder.bundle_names, owner)
            for position, item in enumerate(prepared):
                try:
                    self._check(item.values)
                except UserClassError as error:
                    raise UserClassError(f"import refused, class #{position + 1}: {error}") from None
            space = self.builder.build((*current.space.user_classes, *prepared), current.space.verdicts)
            added = self.store.add_all(prepared, owner)
            self._keep(owner, current, space)
            self._schedule_refinement(owner)
        return added

    # ---- residents ---------------------------------------------------------------------------------------

    def _lock_of(self, owner: str) -> threading.Lock:
        with self._mutex:
            lock = self._locks.get(owner)
            if lock is None:
                lock = threading.Lock()
                self._locks[owner] = lock
            return lock

    def _load(self, owner: str, lock: threading.Lock) -> _Resident:
        """The owner's resident snapshot, rebuilt from the store if evicted (call holding ``lock``)."""
        with self._mutex:
            resident = self._resident.get(owner)
        if resident is None:
            started = time.perf_counter()
            stored = tuple(self.store.list(owner))
            resident = _Resident(self.builder.build(stored), lock, time.monotonic())
            if stored:
                self.store.touch(owner)
                log.info(
                    "rebuilt a visitor's %d classes in %.2f s", len(stored), time.perf_counter() - started
                )
            self._keep(owner, resident, resident.space)
            if stored:
                self._schedule_refinement(owner)
        return resident

    def _keep(self, owner: str, resident: _Resident, space: ClassSpace) -> None:
        """Make ``space`` the owner's snapshot (one assignment: readers see the old or the new one)."""
        resident.space = space
        resident.last_used = time.monotonic()
        with self._mutex:
            self._resident[owner] = resident
            self._resident.move_to_end(owner)
            self._evict(keep=owner)

    def _evict(self, keep: str) -> None:
        """Drop the least recently used residents past the bound and any idle too long, never ``keep`` (the
        one just used; holding _mutex)."""
        deadline = time.monotonic() - self._idle_eviction_s
        while self._resident:
            owner, oldest = next(iter(self._resident.items()))
            over = len(self._resident) > self._max_resident
            if owner == keep or (not over and oldest.last_used >= deadline):
                break
            del self._resident[owner]

    # ---- refinement ----------------------------------------------------------------------------------------

    def _schedule_refinement(self, owner: str) -> None:
        if self._refiner is not None:
            self._refiner.schedule(owner)

    def _refine(self, owner: str) -> None:
        """Swap the full re-fit in for the owner's current snapshot, if it is still current when done."""
        with self._mutex:
            resident = self._resident.get(owner)
        if resident is None or resident.space.refined or not resident.space.user_classes:
            return
        space = resident.space
        classifier = self.builder.full_classifier(space)  # seconds, no lock held: edits and reads go on
        with self._lock_of(owner):
            with self._mutex:
                current = self._resident.get(owner) is resident and resident.space is space
            if current:
                self._keep(owner, resident, replace(space, classifier=classifier, refined=True))

    def wait_refined(self, timeout: float | None = None) -> bool:
        """Block until no refinement is pending or running (True), or ``timeout`` passed (False)."""
        return True if self._refiner is None else self._refiner.wait_idle(timeout)

    def resident_count(self) -> int:
        with self._mutex:
            return len(self._resident)

    def _check(self, values: tuple[float, ...]) -> None:
        if self._check_values is not None:
            self._check_values(values)

    @staticmethod
    def _check_name_free(space: ClassSpace, name: str) -> None:
        if space.has(name):
            position = space.position(name)
            if position < len(space.names) - len(space.user_classes):
                raise UserClassError(f"{name!r} is already a class of this model; choose another name")
            raise UserClassError(f"a class named {name!r} already exists; choose another name")


class _Refiner:
    """One daemon worker refining visitors' classifiers in the order asked, each visitor once however often
    they edited meanwhile (only their latest classes matter)."""

    def __init__(self, refine: Callable[[str], None]) -> None:
        self._refine = refine
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._running = 0
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None

    def schedule(self, owner: str) -> None:
        with self._changed:
            self._pending[owner] = None
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="acmr-refine", daemon=True)
                self._worker.start()
            self._changed.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._running, timeout)

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending))
                owner, _ = self._pending.popitem(last=False)
                self._running += 1
            try:
                self._refine(owner)
            except Exception:  # a failed refinement leaves the fast classifier in place; say why in the log
                log.exception("refining a visitor's classifier failed")
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()
