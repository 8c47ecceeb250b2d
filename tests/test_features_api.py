"""The HTTP API of the studio serving a features-only bundle (issue 36), through gradio_client, for synthetic
CUB and AWA2: /catalog, /latent_space (every test image), /define_class with every attribute, /predict refused
in one line, /results and /predict_test_image."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from acmr_core.bundle.format import load_bundle
from tests.features_fixtures import features_run
from tests.test_app_api import app_error, example_images, launch_on_a_free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]


@pytest.fixture(scope="module", params=["CUB", "AWA2"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """``(built, client, url)``: the app on the bundle, launched in this process on a free loopback port."""
    from gradio_client import Client

    from app.server import create_app

    built = features_run(tmp_path_factory, request.param)
    demo = create_app(
        bundle=str(built.bundle),
        checkpoints=tmp_path_factory.mktemp("no-checkpoints"),
        device="cpu",
        user_classes_dir=tmp_path_factory.mktemp("user_classes"),
    )
    try:
        port = launch_on_a_free_port(demo)
        yield built, Client(f"http://127.0.0.1:{port}/", verbose=False), f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_catalog_lists_every_class_and_attribute(served: tuple) -> None:
    built, client, _ = served
    data = built.data()
    catalog = client.predict(api_name="/catalog")
    assert catalog["attributes"] == data.attribute_names
    assert len(catalog["classes"]) == len(data.class_names)
    kinds = [item["kind"] for item in catalog["classes"]]
    assert kinds.count("unseen") == data.unseen_classes.size and kinds.count("seen") == data.seen_classes.size


def test_latent_space_plots_every_test_image(served: tuple) -> None:
    built, client, _ = served
    data = built.data()
    figure = json.loads(client.predict(api_name="/latent_space")["plot"])
    photos = [trace for trace in figure["data"] if trace.get("name", "").endswith("class images")]
    assert sum(_points(trace["x"]) for trace in photos) == data.test_seen.size + data.test_unseen.size
    assert {trace["name"] for trace in photos} == {"seen class images", "unseen class images"}


def _points(values: list | dict) -> int:
    """How many values a plotly JSON array holds (plotly 6 sends numeric arrays as base64 "bdata")."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).size
    return len(values)


def test_define_class_accepts_a_class_over_every_attribute(served: tuple) -> None:
    built, client, _ = served
    names = built.data().attribute_names
    values = {name: round((i % 7) / 6, 3) for i, name in enumerate(names)}
    record = client.predict("striped mystery", json.dumps(values), api_name="/define_class")
    assert record["name"] == "striped mystery" and record["kind"] == "user"
    assert record["attributes"] == pytest.approx(values, abs=1e-6)
    assert "striped mystery" in [item["name"] for item in client.predict(api_name="/catalog")["classes"]]


def test_predict_on_an_image_is_refused_in_one_line(served: tuple) -> None:
    _, client, _ = served
    from gradio_client import handle_file

    message = app_error(lambda: client.predict(handle_file(str(example_images()[0])), api_name="/predict"))
    assert "reads precomputed image features" in message and "pick a test image" in message
    assert "\n" not in message.strip()


def test_results_give_per_class_accuracy_and_confusions(served: tuple) -> None:
    built, client, _ = served
    results = client.predict(api_name="/results")
    metrics = json.loads((built.run / "metrics.json").read_text())["per_seed"][0]
    assert results["metrics"]["U"] == pytest.approx(metrics["U"], abs=0.5)
    assert results["metrics"]["S"] == pytest.approx(metrics["S"], abs=0.5)
    expected = dict(load_bundle(built.bundle, device="cpu").results)
    del expected["images"]  # per-image answers stay on the server
    assert results == expected
    kinds = {row["kind"] for row in results["classes"]}
    assert kinds == {"seen", "unseen"}
    assert all(len(row["confusions"]) <= 3 for row in results["classes"])


def test_a_picked_test_image_gets_the_answer_the_results_counted(served: tuple) -> None:
    from gradio_client import Client

    built, _, url = served
    client = Client(url, verbose=False)  # a visitor of its own: no class defined by another test takes part
    bundle = load_bundle(built.bundle, device="cpu")
    row = next(row for row in bundle.results["classes"] if row["kind"] == "unseen")
    answer = client.predict(row["name"], 0, api_name="/predict_test_image")
    index = bundle.catalog.index_of(row["name"])
    position = int((bundle.latent.visual_labels == index).nonzero()[0][0])
    assert answer["class"] == row["name"] and answer["image"] == bundle.latent.image_ids[position]
    assert answer["label"] == bundle.catalog.names[bundle.results["images"]["predicted"][position]]
    refused = app_error(lambda: client.predict(row["name"], 10_000, api_name="/predict_test_image"))
    assert f"has {row['images']} test images; pick 0 to {row['images'] - 1}" in refused


def test_the_bundle_folder_is_unchanged_by_serving(served: tuple) -> None:
    built, _, _ = served
    assert sorted(path.name for path in Path(built.bundle).iterdir()) == sorted(
        [*json.loads((built.bundle / "manifest.json").read_text())["files"], "manifest.json"]
    )
