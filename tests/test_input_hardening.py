"""Issue 27 D10, D11, D13: huge, over-long, non-finite and deeply nested input is refused in one short line.

Messages quote bad values shortened (a million-entry value once made a 3 MB message); numbers too long for
Python's int/float conversion and NaN/inf are refused as :class:`UserClassError`/:class:`BundleError`, never
as a bare ValueError/OverflowError; JSON nested 100 000 deep in a bundle file is a one-line BundleError that
names the file, never a RecursionError.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from acmr_core.bundle.catalog import load_class_metadata
from acmr_core.bundle.format import MANIFEST, load_bundle
from acmr_core.errors import ACMRError, BundleError, DataError, UserClassError, quote_value
from acmr_core.fileio import parse_json, read_json
from acmr_core.model.saved_model import CONFIG_FILE, load_trained
from acmr_core.serving.user_classes import UserClassStore
from acmr_core.serving.validation import parse_attributes_json, validate_values

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = REPO_ROOT / "checkpoints" / "demo-world"
ATTRIBUTES = ("red", "blue", "striped", "round")
#: A message is one line a person reads; anything near this long is echoing input.
SHORT = 500
DEEP = "[" * 100_000 + "]" * 100_000
LONG_NUMBER = "1" + "0" * 4999  # 5000 digits: past Python's 4300-digit int conversion limit


def _short_one_line(error: BaseException) -> str:
    message = str(error)
    assert len(message) < SHORT, f"{len(message)}-character message: {message[:120]}..."
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------- D10: huge values, short messages


def test_quote_value_shortens_huge_values_and_never_raises() -> None:
    assert quote_value("red") == "'red'"
    assert len(quote_value([0] * 1_000_000)) <= 60
    assert len(quote_value("x" * 1_000_000)) <= 60
    assert len(quote_value({"a": [1] * 100, "b": "y" * 100})) <= 60
    assert "digits" in quote_value(10**5000)  # repr() itself would raise ValueError
    assert "\n" not in quote_value("a\nb")


def test_a_million_element_attribute_value_gets_a_short_message() -> None:
    with pytest.raises(UserClassError) as caught:
        validate_values({"red": [0] * 1_000_000}, ATTRIBUTES)
    message = _short_one_line(caught.value)
    assert "'red'" in message and "use a number between 0 and 1" in message


def test_a_million_element_attributes_json_is_refused_shortly() -> None:
    text = json.dumps({"red": [0] * 1_000_000})
    with pytest.raises(UserClassError) as caught:
        validate_values(parse_attributes_json(text), ATTRIBUTES)
    assert "characters long" in _short_one_line(caught.value)


def test_more_entries_than_attributes_are_refused_before_validation() -> None:
    with pytest.raises(UserClassError) as caught:
        validate_values({f"a{index}": 1 for index in range(100_000)}, ATTRIBUTES)
    assert "100000 attribute values given; this model has 4" in _short_one_line(caught.value)


def test_the_app_shows_the_short_message() -> None:
    gr = pytest.importorskip("gradio")
    from app.widgets import user_errors

    @user_errors
    def define(attributes: dict) -> tuple[float, ...]:
        return validate_values(attributes, ATTRIBUTES)

    with pytest.raises(gr.Error) as caught:
        define({"red": list(range(1_000_000))})
    assert len(caught.value.message) < SHORT and "use a number" in caught.value.message


# ------------------------------------------------------------------------- D11: long and non-finite numbers


def test_a_5000_digit_number_in_attributes_json_is_a_user_error() -> None:
    with pytest.raises(UserClassError) as caught:
        parse_attributes_json('{"red": ' + LONG_NUMBER + "}")
    message = _short_one_line(caught.value)
    assert "5000 digits" in message and "not valid JSON" in message


def test_a_5000_digit_number_in_an_import_file_is_a_user_error(tmp_path: Path) -> None:
    store = UserClassStore(tmp_path / "store.sqlite3", "demo@abc", ATTRIBUTES)
    document = '{"format": "acmr-user-classes", "classes": [{"name": "x", "attributes": {"red": %s}}]}'
    try:
        with pytest.raises(UserClassError) as caught:
            store.import_json(document % LONG_NUMBER)
        assert "5000 digits" in _short_one_line(caught.value)
    finally:
        store.close()


def test_huge_and_non_finite_attribute_values_are_refused_naming_the_attribute() -> None:
    cases = {
        '{"red": 1%s}' % ("0" * 350): "inf",  # an int float() cannot hold: was a bare OverflowError
        '{"red": 1e999}': "inf",
        '{"red": NaN}': "nan",
        '{"red": Infinity}': "inf",
        '{"red": -Infinity}': "-inf",
    }
    for text, shown in cases.items():
        with pytest.raises(UserClassError) as caught:
            validate_values(parse_attributes_json(text), ATTRIBUTES)
        message = _short_one_line(caught.value)
        assert f"attribute 'red' is {shown}; use a number between 0 and 1" == message, text
    with pytest.raises(UserClassError, match="'red' is inf"):
        validate_values({"red": 10**400}, ATTRIBUTES)  # from Python, not JSON


@pytest.mark.parametrize("gamma", ["abc", 10**400, [1.0] * 1_000_000], ids=["text", "400-digit", "1M-list"])
def test_a_bad_calibration_gamma_is_one_short_line(gamma: object) -> None:
    from acmr_core.serving.read_side import ReadSide

    # Only the argument check runs: it comes before anything that needs a loaded model.
    with pytest.raises(ACMRError, match="calibration gamma must be a finite number") as caught:
        ReadSide.predict_features(SimpleNamespace(default_gamma=1.0), None, np.zeros(4), gamma=gamma)
    _short_one_line(caught.value)


def test_strict_json_refuses_what_the_project_never_writes() -> None:
    for text, reason in [
        ("[NaN]", "NaN is not a JSON number"),
        ("[Infinity]", "Infinity is not a JSON number"),
        ("[1e999]", "too large a number"),
        (LONG_NUMBER, "5000 digits"),
        (DEEP, "nested too deeply"),
        ("[" * 65 + "]" * 65, "nested too deeply"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_json(text)
    assert parse_json("[" * 64 + "]" * 64) is not None
    assert parse_json("[NaN]", allow_non_finite=True)[0] != 0


# ------------------------------------------------------------------------------ D13: deep JSON in a bundle


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    if not (DEMO_BUNDLE / MANIFEST).is_file():
        raise AssertionError(
            f"the shipped demo bundle is missing at {DEMO_BUNDLE}; rebuild it: acmr build-demo"
        )
    target = tmp_path / "demo-world"
    shutil.copytree(DEMO_BUNDLE, target)
    return target


def _replace_part(bundle: Path, part: str, text: str) -> None:
    """Overwrite one part and record it in the manifest, so only its content is wrong."""
    data = text.encode()
    (bundle / part).write_bytes(data)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"][part] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def _bundle_error(bundle: Path) -> str:
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle, device="cpu")
    return _short_one_line(caught.value)


def test_a_100000_deep_model_json_is_a_one_line_bundle_error(bundle_copy: Path) -> None:
    _replace_part(bundle_copy, "model.json", DEEP)
    message = _bundle_error(bundle_copy)
    assert message.startswith("bundle demo-world: model.json is corrupt (not valid JSON: nested too deeply")
    assert "rebuild or re-copy the bundle" in message


def test_a_100000_deep_manifest_is_a_one_line_bundle_error(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST).write_text('{"files": ' + DEEP + "}")
    message = _bundle_error(bundle_copy)
    assert f"{MANIFEST} is corrupt (not valid JSON: nested too deeply" in message


def test_long_and_non_finite_numbers_in_bundle_json_are_refused(bundle_copy: Path) -> None:
    model = (bundle_copy / "model.json").read_text()
    latent = (bundle_copy / "latent.json").read_text()
    _replace_part(bundle_copy, "model.json", model.replace("{", '{"x": ' + LONG_NUMBER + ", ", 1))
    assert "model.json is corrupt (not valid JSON: a number has 5000 digits)" in _bundle_error(bundle_copy)
    _replace_part(bundle_copy, "model.json", model)
    classifier = json.loads((bundle_copy / "classifier.json").read_text())
    _replace_part(bundle_copy, "classifier.json", json.dumps({**classifier, "epochs": float("nan")}))
    assert "classifier.json 'epochs' is not a whole number" in _bundle_error(bundle_copy)  # was ValueError
    _replace_part(bundle_copy, "classifier.json", json.dumps(classifier))
    meta = json.loads(latent)
    meta["neighbours"] = float("inf")  # int(inf) was a bare OverflowError
    _replace_part(bundle_copy, "latent.json", json.dumps(meta))
    assert "latent.json is corrupt (not valid JSON: Infinity is not a JSON number)" in _bundle_error(
        bundle_copy
    )


def test_deep_json_in_a_saved_model_and_class_metadata_is_refused(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(DEEP)
    with pytest.raises(
        BundleError, match=f"{CONFIG_FILE} is corrupt \\(not valid JSON: nested too deeply"
    ) as caught:
        load_trained(tmp_path)
    _short_one_line(caught.value)
    (tmp_path / "classes.json").write_text(DEEP)
    with pytest.raises(DataError, match=r"classes\.json is corrupt .*nested too deeply.*must be a JSON file"):
        load_class_metadata(tmp_path / "classes.json")


def test_read_json_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"thing\.json not found"):
        read_json(tmp_path / "thing.json")


def test_a_huge_table_cell_is_quoted_shortly() -> None:
    import pandas as pd

    from app.tables import frame_to_attributes

    frame = pd.DataFrame({"attribute": ["colour: red"], "value": ["x" * 1_000_000]})
    with pytest.raises(UserClassError) as refused:
        frame_to_attributes(frame)
    message = str(refused.value)
    assert "colour: red" in message and len(message) < 300
