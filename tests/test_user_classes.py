"""The per-bundle user-class store: validation, durability across reopen, concurrency, export/import."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest

from acmr_core.errors import UserClassError
from acmr_core.serving.user_classes import UserClassStore
from acmr_core.serving.validation import (
    MAX_NAME_LENGTH,
    parse_attributes_json,
    validate_name,
    validate_values,
)

ATTRIBUTES = ("red", "blue", "striped", "round")


@pytest.fixture
def store(tmp_path: Path) -> UserClassStore:
    opened = UserClassStore(tmp_path / "demo.sqlite3", "demo@abc", ATTRIBUTES)
    yield opened
    opened.close()


def test_add_then_reopen_keeps_the_class(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    first = UserClassStore(path, "demo@abc", ATTRIBUTES)
    added = first.add("  Red   ball ", {"red": 1, "round": 0.5})
    first.close()
    assert added.name == "Red ball"
    reopened = UserClassStore(path, "demo@abc", ATTRIBUTES)
    [stored] = reopened.list()
    assert stored.name == "Red ball"
    assert stored.values == (1.0, 0.0, 0.0, 0.5)
    assert stored.attributes(ATTRIBUTES) == {"red": 1.0, "blue": 0.0, "striped": 0.0, "round": 0.5}
    reopened.close()


def test_store_of_another_bundle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    UserClassStore(path, "demo@abc", ATTRIBUTES).close()
    with pytest.raises(UserClassError, match="another bundle"):
        UserClassStore(path, "other@def", ATTRIBUTES)
    with pytest.raises(UserClassError, match="another bundle"):
        UserClassStore(path, "demo@abc", ("red", "green"))


def test_corrupt_store_file_is_refused_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserClassError, match="not a readable SQLite file"):
        UserClassStore(path, "demo@abc", ATTRIBUTES)
    assert path.read_bytes().startswith(b"this is not a database")  # nothing overwritten


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ("x" * 10_000, f"at most {MAX_NAME_LENGTH}"),
        ("bell\x07", "control characters"),
        (42, "must be text"),
    ],
)
def test_bad_names_are_refused(name: object, message: str) -> None:
    with pytest.raises(UserClassError, match=message):
        validate_name(name)


def test_html_names_are_kept_verbatim_for_escaping_at_display() -> None:
    assert validate_name("<script>alert(1)</script>") == "<script>alert(1)</script>"


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"green": 1}, "unknown attribute"),
        ({"red": math.nan}, "nan"),
        ({"red": math.inf}, "inf"),
        ({"red": 1.5}, "outside"),
        ({"red": -0.1}, "outside"),
        ({"red": "1"}, "use a number"),
        ({"red": True}, "use a number"),
        ({"red": 0}, "every attribute is 0"),
        ({}, "every attribute is 0"),
        (["red"], "JSON object"),
    ],
)
def test_bad_attribute_values_are_refused(attributes: object, message: str) -> None:
    with pytest.raises(UserClassError, match=message):
        validate_values(attributes, ATTRIBUTES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("{red: 1", "not valid JSON"),
        ("[1, 2]", "got a JSON list"),
        ("null", "got a JSON NoneType"),
    ],
)
def test_bad_attribute_json_is_refused(text: str, message: str) -> None:
    with pytest.raises(UserClassError, match=message):
        parse_attributes_json(text)


def test_nan_in_json_parses_then_fails_validation() -> None:
    parsed = parse_attributes_json('{"red": NaN}')
    with pytest.raises(UserClassError, match="nan"):
        validate_values(parsed, ATTRIBUTES)


def test_duplicates_are_refused_case_insensitively(store: UserClassStore) -> None:
    store.add("Zebra", {"striped": 1})
    with pytest.raises(UserClassError, match="already exists"):
        store.add("zebra", {"red": 1})
    with pytest.raises(UserClassError, match="already a class of this model"):
        store.add("Horse", {"red": 1}, reserved_names=["horse", "cat"])
    assert [item.name for item in store.list()] == ["Zebra"]


def test_rename_and_delete(store: UserClassStore) -> None:
    store.add("a", {"red": 1})
    store.add("b", {"blue": 1})
    with pytest.raises(UserClassError, match="already exists"):
        store.rename("a", "B")
    renamed = store.rename("a", "A")  # changing only the case of its own name is allowed
    assert renamed.name == "A"
    assert store.delete("b").name == "b"
    with pytest.raises(UserClassError, match="no user class named"):
        store.delete("b")
    assert [item.name for item in store.list()] == ["A"]


def test_export_import_round_trip_is_all_or_nothing(tmp_path: Path, store: UserClassStore) -> None:
    store.add("one", {"red": 1})
    store.add("two", {"blue": 0.25, "round": 1})
    exported = store.export_json()
    assert json.loads(exported)["classes"][1]["attributes"]["blue"] == 0.25

    other = UserClassStore(tmp_path / "other.sqlite3", "demo@abc", ATTRIBUTES)
    other.add("two", {"red": 1})  # clashes with the second class of the file
    with pytest.raises(UserClassError, match="class #2"):
        other.import_json(exported)
    assert [item.name for item in other.list()] == ["two"]  # the first class was not half-imported
    other.delete("two")
    imported = other.import_json(exported)
    assert [item.name for item in imported] == ["one", "two"]
    assert [item.values for item in other.list()] == [item.values for item in store.list()]
    other.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [("not json", "not valid JSON"), ('{"format": "x"}', "not an acmr-user-classes"), ("[]", "not an")],
)
def test_bad_import_files_are_refused(store: UserClassStore, text: str, message: str) -> None:
    with pytest.raises(UserClassError, match=message):
        store.import_json(text)


def test_concurrent_adds_all_land_and_duplicates_lose(store: UserClassStore) -> None:
    """30 threads released together by a barrier (so the adds are in flight at once on the shared connection):
    each name lands once, every other add of it is refused cleanly, and no add fails any other way."""
    refused: list[str] = []
    unexpected: list[BaseException] = []
    start_together = threading.Barrier(30)

    def add(index: int) -> None:
        try:
            start_together.wait(timeout=60)  # a broken barrier is reported below, not lost in a thread
            store.add(f"class {index % 10}", {"red": (index % 10) / 10 + 0.05})
        except UserClassError as error:
            refused.append(str(error))
        except BaseException as error:  # e.g. sqlite3 errors from two transactions on one connection
            unexpected.append(error)

    threads = [threading.Thread(target=add, args=(index,)) for index in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)  # a hang guard: a deadlocked add fails here instead of hanging the suite
    assert not any(thread.is_alive() for thread in threads), "an add never returned"
    assert not unexpected, unexpected[:3]
    assert sorted(item.name for item in store.list()) == [f"class {index}" for index in range(10)]
    assert len(refused) == 20
    assert all("already exists" in message for message in refused)


def test_a_class_is_on_disk_when_add_returns(tmp_path: Path) -> None:
    """Another connection (as after a crash, before any clean close) already sees the committed class."""
    path = tmp_path / "store.sqlite3"
    writer = UserClassStore(path, "demo@abc", ATTRIBUTES)
    writer.add("durable", {"blue": 1})
    reader = UserClassStore(path, "demo@abc", ATTRIBUTES)  # writer still open: nothing flushed by a close
    assert [item.name for item in reader.list()] == ["durable"]
    reader.close()
    writer.close()


def test_the_total_number_of_user_classes_is_bounded(
    store: UserClassStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import acmr_core.serving.user_classes as user_classes

    monkeypatch.setattr(user_classes, "MAX_USER_CLASSES", 3)
    store.add("one", {"red": 1})
    store.add("two", {"blue": 1})
    document = json.loads(store.export_json())
    document["classes"] = [
        {"name": "three", "attributes": {"round": 1}},
        {"name": "four", "attributes": {"striped": 1}},
    ]
    with pytest.raises(
        UserClassError, match=r"already have 2 classes and one visitor holds at most 3 \(room for 1"
    ):
        store.import_json(json.dumps(document))
    store.add("three", {"round": 1})
    with pytest.raises(UserClassError, match="one visitor holds at most 3"):
        store.add("four", {"striped": 1})
    assert [item.name for item in store.list()] == ["one", "two", "three"]  # nothing half-added
    store.delete("one")
    store.add("four", {"striped": 1})  # room again once one is deleted
    assert len(store) == 3


def test_the_import_cap_never_exceeds_the_total_limit() -> None:
    from acmr_core.serving.user_classes import MAX_IMPORT_CLASSES, MAX_USER_CLASSES

    assert MAX_IMPORT_CLASSES <= MAX_USER_CLASSES


@pytest.mark.parametrize("tiny", [1e-320, 5e-324, 1e-9])
def test_values_below_the_epsilon_count_as_zero(tiny: float) -> None:
    from acmr_core.serving.validation import VALUE_EPSILON

    assert tiny < VALUE_EPSILON
    with pytest.raises(UserClassError, match="every attribute is 0"):
        validate_values({"red": tiny}, ATTRIBUTES)
    assert validate_values({"red": tiny, "blue": VALUE_EPSILON}, ATTRIBUTES) == (0.0, VALUE_EPSILON, 0.0, 0.0)
    parsed = parse_attributes_json(json.dumps({"red": tiny}))
    with pytest.raises(UserClassError, match="every attribute is 0"):
        validate_values(parsed, ATTRIBUTES)


def test_deeply_nested_json_gets_the_one_line_message(store: UserClassStore) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(UserClassError, match="nested too deeply") as caught:
        parse_attributes_json('{"red": ' + nested + "}")
    assert "\n" not in str(caught.value)
    with pytest.raises(UserClassError, match="nested too deeply"):
        store.import_json('{"format": "acmr-user-classes", "classes": ' + nested + "}")


# ---- owners (issue 24): each visitor's classes are their own ---------------------------------------------


def test_owners_see_change_and_export_only_their_own_classes(store: UserClassStore) -> None:
    store.add("zebra", {"red": 1}, owner="visitor-a-0123456789")
    store.add("Zebra", {"blue": 1}, owner="visitor-b-0123456789")  # the same name is free for another owner
    assert [item.values[0] for item in store.list("visitor-a-0123456789")] == [1.0]
    assert [item.name for item in store.list("visitor-b-0123456789")] == ["Zebra"]
    assert store.list() == []  # the shared owner has none
    with pytest.raises(UserClassError, match="there is no user class named 'zebra'"):
        store.delete("zebra", owner="someone-else-0123456789")
    with pytest.raises(UserClassError, match="there is no user class named"):
        store.rename("zebra", "horse", owner="someone-else-0123456789")
    exported = json.loads(store.export_json("visitor-b-0123456789"))
    assert [entry["name"] for entry in exported["classes"]] == ["Zebra"]
    store.delete("ZEBRA", owner="visitor-a-0123456789")
    assert store.count("visitor-a-0123456789") == 0 and store.count("visitor-b-0123456789") == 1


def test_a_name_differing_only_in_width_or_case_is_the_same_name(store: UserClassStore) -> None:
    from acmr_core.serving.validation import fold_name

    store.add("Zebra", {"red": 1})
    assert fold_name("\uff3a\uff45\uff42\uff52\uff41") == fold_name(" zebra ") == fold_name("ZEBRA")
    with pytest.raises(UserClassError, match="already exists"):
        store.add("\uff3a\uff45\uff42\uff52\uff41", {"blue": 1})  # full-width Zebra


def test_the_whole_store_is_bounded_over_all_owners(
    store: UserClassStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import acmr_core.serving.user_classes as user_classes

    monkeypatch.setattr(user_classes, "MAX_STORED_CLASSES", 3)
    for index, owner in enumerate(["owner-one-0123456789", "owner-two-0123456789", "owner-three-01234567"]):
        store.add(f"class {index}", {"red": 1}, owner=owner)
    with pytest.raises(
        UserClassError, match="this server holds its limit of 3 user classes over all visitors"
    ):
        store.add("one more", {"red": 1}, owner="owner-four-0123456789")
    store.delete("class 0", owner="owner-one-0123456789")
    store.add("one more", {"red": 1}, owner="owner-four-0123456789")


def test_long_idle_owners_are_forgotten_but_not_the_shared_one(
    store: UserClassStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("kept", {"red": 1})
    store.add("old", {"red": 1}, owner="idle-visitor-0123456789")
    store.add("new", {"red": 1}, owner="active-visitor-0123456")
    later = time.time() + 100 * 86_400
    monkeypatch.setattr(time, "time", lambda: later)
    store.touch("active-visitor-0123456")
    assert store.forget_idle(days=90) == 1  # the idle visitor's one class; the shared owner's stays
    assert store.count("idle-visitor-0123456789") == 0
    assert [item.name for item in store.list("active-visitor-0123456")] == ["new"]
    assert [item.name for item in store.list()] == ["kept"]


def test_a_version_1_store_is_migrated_to_the_shared_owner(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:  # the layout issue 24's predecessor wrote
        connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        connection.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema", "1"), ("bundle", "demo@abc"), ("attributes", json.dumps(ATTRIBUTES))],
        )
        connection.execute(
            "CREATE TABLE classes (name TEXT NOT NULL, folded TEXT PRIMARY KEY, vals TEXT NOT NULL,"
            " created REAL NOT NULL)"
        )
        connection.execute("INSERT INTO classes VALUES ('Zebra', 'zebra', '[1.0, 0.0, 0.0, 0.0]', 1.0)")
    connection.close()
    store = UserClassStore(path, "demo@abc", ATTRIBUTES)
    try:
        assert [(item.name, item.values) for item in store.list()] == [("Zebra", (1.0, 0.0, 0.0, 0.0))]
        store.add("horse", {"blue": 1}, owner="a-visitor-0123456789")
        assert store.count(None) == 2
    finally:
        store.close()
